"""BraTS protocols: hand-computed cases, and equality with the official brats-evaluation package."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import warnings

import numpy as np
import pytest

from medfoundry.errors import DataError
from medfoundry.evaluation.protocols import get_protocol
from medfoundry.evaluation.protocols.brats import FIGURES, HD95_PENALTY, region_figures
from medfoundry.evaluation.protocols.instances import connected_components, match_instances, overlap_counts
from protocol_synth import random_cases, save_nifti

NAN = float("nan")


def same(a: float, b: float, tol: float = 1e-6) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol


def cube(shape, lo, hi):
    out = np.zeros(shape, bool)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return out


def test_two_lesions_one_found_one_false_positive():
    shape = (20, 20, 20)
    ref = cube(shape, (2, 2, 2), (6, 6, 6)) | cube(shape, (12, 12, 12), (14, 14, 14))
    pred = cube(shape, (2, 2, 2), (6, 6, 6)) | cube(shape, (2, 14, 14), (3, 15, 15))
    f = region_figures(pred, ref, (1.0, 1.0, 1.0))
    assert (f["tp"], f["fp"], f["fn"], f["n_ref"], f["n_pred"]) == (1, 1, 1, 2, 2)
    assert f["precision"] == 0.5 and f["recall"] == 0.5
    assert f["f1"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert f["lesionwise_dice"] == 1.0 and f["lesionwise_hd95"] == 0.0 and f["lesionwise_nsd"] == 1.0
    assert f["lesionwise_dice_std"] == 0.0
    assert f["pq_dice"] == pytest.approx(f["f1"])
    # Global: 64 common voxels out of 64 + 8 (ref) and 64 + 1 (pred).
    assert f["dice"] == pytest.approx(2 * 64 / (72 + 65))


def test_shifted_lesion_distances_in_mm_lesionwise_and_voxels_globally():
    shape = (16, 16, 16)
    ref = cube(shape, (4, 4, 4), (10, 10, 10))
    pred = np.roll(ref, 1, axis=0)
    f = region_figures(pred, ref, (2.0, 1.0, 1.0))
    # Border voxels move one voxel along axis 0: 2 mm per lesion, 1 voxel globally.
    assert f["hd95"] == pytest.approx(1.0)
    assert f["lesionwise_hd95"] == pytest.approx(2.0)
    assert f["lesionwise_dice"] == pytest.approx(2 * 5 * 36 / (2 * 216))
    # Tolerance = smallest spacing (1 mm): faces moved along axis 0 by 2 mm are out of it.
    assert 0.0 < f["lesionwise_nsd"] < 1.0


@pytest.mark.parametrize("pred_empty, ref_empty", [(True, True), (True, False), (False, True)])
def test_empty_maps(pred_empty, ref_empty):
    shape = (12, 12, 12)
    lesion = cube(shape, (3, 3, 3), (6, 6, 6))
    pred = np.zeros(shape, bool) if pred_empty else lesion
    ref = np.zeros(shape, bool) if ref_empty else lesion
    f = region_figures(pred, ref, (1.0, 1.0, 1.0))
    if pred_empty and ref_empty:
        for key in ("dice", "nsd", "hd95", "f1", "lesionwise_dice", "lesionwise_hd95", "pq_dice", "precision",
                    "recall", "lesionwise_dice_std"):
            assert math.isnan(f[key]), key
    else:
        assert f["dice"] == 0.0 and f["nsd"] == 0.0 and f["hd95"] == math.inf
        assert f["lesionwise_dice"] == 0.0 and f["lesionwise_hd95"] == math.inf and f["f1"] == 0.0
        assert math.isnan(f["lesionwise_dice_std"])
        assert math.isnan(f["precision"]) == pred_empty and math.isnan(f["recall"]) == ref_empty


def test_protocol_applies_penalty_and_regions():
    protocol = get_protocol("brats-gli")
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 3
    pred = np.zeros_like(ref)
    pred[8:11, 8:11, 8:11] = 1
    out = protocol.evaluate_case(pred, ref, (1.0, 1.0, 1.0))
    assert set(out) == {"wt", "tc", "et", "netc", "snfh", "rc"}
    assert all(set(fig) == set(FIGURES) for fig in out.values())
    assert out["et"]["hd95"] == HD95_PENALTY  # reference only: inf, reported as 373
    assert math.isnan(out["rc"]["dice"])  # empty in both
    assert out["wt"]["hd95"] == HD95_PENALTY  # no overlap


def test_unknown_label_is_an_error():
    ref = np.zeros((6, 6, 6), np.uint8)
    pred = ref.copy()
    pred[1, 1, 1] = 7
    with pytest.raises(DataError, match=r"label\(s\) \[7\].*brats-gli"):
        get_protocol("brats-gli").evaluate_case(pred, ref, (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="label"):  # mets has no label 5 either
        get_protocol("brats-mets").evaluate_case(pred * 0 + 5, ref, (1.0, 1.0, 1.0))


def test_missing_case_is_scored_like_the_official_parser():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:3, 1:3, 1:3] = 3
    out = get_protocol("brats-gli").missing_case(ref, (1.0, 1.0, 1.0))
    for region, figures in out.items():
        assert figures["hd95"] == HD95_PENALTY and figures["lesionwise_hd95"] == HD95_PENALTY
        assert figures["lesionwise_hd95_std"] == 0.0 and figures["dice"] == 0.0 and figures["tp"] == 0.0
    assert out["et"]["n_ref"] == 1.0


def test_matching_prefers_the_larger_total_dice():
    # One reference lesion touched by two predictions: the one with the larger Dice is the match.
    ref_sizes = np.array([10])
    pred_sizes = np.array([10, 4])
    inter = np.array([[3, 4]])
    assert match_instances(ref_sizes, pred_sizes, inter) == [(0, 1, pytest.approx(2 * 4 / 14))]
    # No overlap, no match, whatever the threshold.
    assert match_instances(ref_sizes, pred_sizes, np.array([[0, 0]]), threshold=0.0) == []


def test_components_are_26_connected_in_3d_and_4_connected_in_2d():
    diagonal = np.zeros((3, 3, 3), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    assert connected_components(diagonal)[1] == 1
    assert connected_components(np.eye(2, dtype=bool))[1] == 2
    labels, n = connected_components(diagonal)
    ref_sizes, pred_sizes, inter = overlap_counts(labels, n, labels, n)
    assert inter.tolist() == [[2]] and ref_sizes.tolist() == [2]


def test_geometric_axis_order_option():
    # Along axis 2 (spacing 3 mm) a one-voxel shift is 3 mm; the official order pairs axis 2
    # of the file with the spacing of axis 0 (1 mm).
    ref = np.zeros((14, 14, 14), np.uint8)
    ref[4:9, 4:9, 4:9] = 1
    pred = np.roll(ref, 1, axis=2)
    official = get_protocol("brats-men-rt")
    geometric = dataclasses.replace(official, official_axis_order=False)
    spacing = (1.0, 1.0, 3.0)
    assert geometric.evaluate_case(pred, ref, spacing)["gtv"]["lesionwise_hd95"] == pytest.approx(3.0)
    assert official.evaluate_case(pred, ref, spacing)["gtv"]["lesionwise_hd95"] == pytest.approx(1.0)


# --- the official package (AGPL-3.0, test-only oracle) ---------------------------------------

_CONFIGS = {"brats-gli": "gli", "brats-mets": "mets", "brats-ped": "ped", "brats-men": "MenPre",
            "brats-men-rt": "MenRT", "brats-goat": "GoAT"}


def _official(tmp_path, config: str, pred, ref, spacing) -> tuple[dict, dict]:
    """One case through brats-evaluation: panoptica's dict and the parsed CSV row (the
    metastasis parser for ``mets``, with its default thresholds 20 and 0.1)."""
    pytest.importorskip("brats_evaluation")
    import pandas as pd
    from importlib.resources import files

    from brats_evaluation import evaluate_single_exam, parse_mets_results, parse_seg_results
    from panoptica import Panoptica_Evaluator

    evaluator = Panoptica_Evaluator.load_from_config(
        str(files("brats_evaluation").joinpath("configs", f"config_{config}.yaml")))
    save_nifti(tmp_path / "ref.nii.gz", ref, spacing)
    save_nifti(tmp_path / "pred.nii.gz", pred, spacing)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = evaluate_single_exam(str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz"), "case", evaluator)
        assert "error" not in raw, raw
        (tmp_path / "o.json").write_text(json.dumps({"metrics": [raw], "missings": []}, default=float))
        if config == "mets":
            parse_mets_results(str(tmp_path / "o.json"), 20.0, 0.1, str(tmp_path / "o.csv"))
        else:
            parse_seg_results(str(tmp_path / "o.json"), str(tmp_path / "o.csv"))
    return raw, pd.read_csv(tmp_path / "o.csv").iloc[0].to_dict()


def _compare(protocol, ours, raw, row, where: str) -> None:
    for region, figures in ours.items():
        for key, stem in protocol.official_columns().items():
            assert same(figures[key], float(row[f"{stem}_{region}"])), (where, region, key)
        for key, official_key in (("pq_dice", "pq_dsc"), ("n_ref", "n_ref_instances"),
                                  ("n_pred", "n_pred_instances")):
            assert same(figures[key], float(raw[region][official_key])), (where, region, key)


@pytest.mark.parametrize("name, seed, n", [("brats-gli", 0, 10), ("brats-mets", 1, 8), ("brats-ped", 2, 3),
                                           ("brats-men", 3, 3), ("brats-men-rt", 4, 3), ("brats-goat", 5, 3)])
def test_equal_to_brats_evaluation(tmp_path, name, seed, n):
    protocol = get_protocol(name)
    labels = sorted({label for group in protocol.regions.values() for label in group})
    for i, (pred, ref, spacing) in enumerate(random_cases(seed, n, labels)):
        spacing = tuple(float(np.float32(s)) for s in spacing)
        raw, row = _official(tmp_path, _CONFIGS[name], pred, ref, spacing)
        _compare(protocol, protocol.evaluate_case(pred, ref, spacing), raw, row, f"{name} case {i}")


def test_metastasis_size_split_by_hand():
    from medfoundry.evaluation.protocols.brats import Lesion
    from medfoundry.evaluation.protocols.brats_mets import lesion_split_figures

    lesions = [Lesion(30.0, True, 0.05, 0.1, 4.0),  # large, matched but below Dice 0.1: missed
               Lesion(30.0, True, 0.8, 0.9, 1.0),   # large, detected
               Lesion(5.0, False),                  # small, unmatched
               Lesion(5.0, True, 0.5, 1.0, 1.0)]    # small, detected
    f = lesion_split_figures(lesions, n_fp=1)
    assert (f["large_tp"], f["large_fn"], f["large_fp"]) == (1, 1, 1) and f["large_f1"] == 0.5
    assert (f["small_tp"], f["small_fn"], f["small_fp"]) == (1, 1, 1) and f["small_precision"] == 0.5
    assert f["lesionwise_dice"] == pytest.approx((0.05 + 0.8 + 0.0) / 3)
    assert f["lesionwise_hd95"] == pytest.approx((4.0 + 1.0 + HD95_PENALTY) / 3)
    only_small = lesion_split_figures([Lesion(1.0, False)], n_fp=0)
    assert math.isnan(only_small["large_f1"]) and math.isnan(only_small["lesionwise_dice"])
    assert only_small["small_fn"] == 1 and only_small["small_f1"] == 0.0
