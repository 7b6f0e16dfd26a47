"""`l2r evaluate --config` against the official Learn2Reg evaluation script itself.

The official code (MDL-UzL/L2R, ``evaluation/evaluation.py`` + ``utils.py``) is not shipped
here: point ``MEDFOUNDRY_L2R_OFFICIAL`` at a folder holding those two files (the surface-distance
package it imports is a test dependency). Without it these tests skip. Per case, Dice, HD95
(voxels), TRE and SDlogJ must agree to 1e-5 on smooth random fields and on folding fields.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfoundry.learn2reg import Learn2RegDataset, evaluate_fields, save_displacement
from medfoundry.learn2reg.dataset import make_dataset
from medfoundry.randomfields import random_displacement

OFFICIAL = os.environ.get("MEDFOUNDRY_L2R_OFFICIAL")
pytestmark = pytest.mark.skipif(
    not OFFICIAL or not (Path(OFFICIAL) / "evaluation.py").is_file(),
    reason="set MEDFOUNDRY_L2R_OFFICIAL to a folder with the official evaluation.py and utils.py")


def _official_module():
    pytest.importorskip("surface_distance")
    if "evalutils.exceptions" not in sys.modules:  # imported by utils.py only for its exception class
        evalutils = types.ModuleType("evalutils")
        exceptions = types.ModuleType("evalutils.exceptions")
        exceptions.ValidationError = type("ValidationError", (Exception,), {})
        evalutils.exceptions = exceptions
        sys.modules.update({"evalutils": evalutils, "evalutils.exceptions": exceptions})
    for name in ("utils", "evaluation"):
        sys.modules.pop(name, None)
    sys.path.insert(0, OFFICIAL)
    try:
        return importlib.import_module("evaluation")
    finally:
        sys.path.remove(OFFICIAL)
        sys.modules.pop("utils", None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2r_official") / "ds"
    make_dataset(root, resolution=4, pairs=4, seed=5, n_landmarks=10, n_keypoints=4)
    return root


def _write_fields(root: Path, out: Path, kind: str) -> None:
    data = Learn2RegDataset(root)
    for i, pair in enumerate(data.pairs("val")):
        shape = nib.load(str(data.path(pair.fixed))).shape
        rng = np.random.default_rng(100 + i)
        if kind == "smooth":
            disp = np.moveaxis(random_displacement(shape, 3.0, 4.0, rng), 0, -1)
        else:  # voxel-wise noise: many folded voxels, displacements near .5 included
            disp = rng.normal(0.0, 1.2, size=(*shape, 3))
        save_displacement(out / f"{pair.field_stem}.nii.gz", np.asarray(disp, dtype=np.float32))


@pytest.mark.parametrize("kind", ["smooth", "folding"])
def test_per_case_figures_equal_the_official_script(dataset, tmp_path, kind):
    official = _official_module()
    fields = tmp_path / kind
    _write_fields(dataset, fields, kind)
    config = dataset / "SynthMNI_VAL_evaluation_config.json"
    official_json = tmp_path / "official.json"
    official.evaluate_L2R(str(fields), str(dataset), str(official_json), str(config))
    theirs = json.loads(official_json.read_text())["cases"]
    ours = evaluate_fields(dataset, fields, config=config)
    assert not ours["failed"]
    methods = {m["name"]: m["metric"] for m in json.loads(config.read_text())["evaluation_methods"]}
    key = {"dice": "dice", "hd95": "hd95", "tre": "tre_lm", "sdlogj": "sdlogj_official"}
    assert len(theirs) == len(ours["cases"])
    for case in ours["cases"]:
        fixed, moving = case["fixed"], case["moving"]
        name = f"{fixed[-16:-12]}_{fixed[-11:-7]}<--{moving[-16:-12]}_{moving[-11:-7]}"
        for method, metric in methods.items():
            expected = theirs[name][method]["mean"]
            assert case[key[metric]] == pytest.approx(expected, abs=1e-5, rel=1e-5), (name, method)
        labels = [str(label) for label in json.loads(config.read_text())["evaluation_methods"][1]["labels"]]
        dice_official = theirs[name]["DSC"]["detailed"]
        dice_ours = [case["dice_per_label"].get(label) for label in labels]
        for a, b in zip(dice_ours, dice_official):
            assert (a is None and (b is None or b != b)) or a == pytest.approx(b, abs=1e-5)


LUNG = Path(__file__).resolve().parents[2].parent / "shared" / "learn2reg" / "LungCT_val"


@pytest.mark.slow
@pytest.mark.skipif(not LUNG.is_dir(), reason="shared LungCT_val files not present beside the checkout")
def test_real_lungct_landmarks_keypoints_and_masked_sdlogj_equal_the_official_script(tmp_path):
    """The official LungCT VAL configuration on the real points and lung masks (masked SDlogJ)."""
    official = _official_module()
    root = tmp_path / "LungCT"
    (root / "imagesTr").mkdir(parents=True)
    for sub in ("masksTr", "landmarksTr", "keypointsTr"):
        (root / sub).symlink_to(LUNG / sub)
    # The images are not shared; both scripts only read their headers' voxel size, which the
    # fixed lung mask carries (both scans of a LungCT pair share it).
    for scan in ("0000", "0001"):
        (root / "imagesTr" / f"LungCT_0001_{scan}.nii.gz").symlink_to(LUNG / "masksTr" / "LungCT_0001_0000.nii.gz")
    # Full-size fields are slow on a shared CPU: the first pair only, uncompressed, with
    # a smooth field that folds in a block of voxel noise in the middle of the lungs.
    config_data = json.loads((LUNG / "LungCT_VAL_evaluation_config.json").read_text())
    config_data["eval_pairs"] = config_data["eval_pairs"][:1]
    config = tmp_path / "LungCT_VAL_evaluation_config.json"
    config.write_text(json.dumps(config_data))
    shape = tuple(config_data["expected_shape"][:3])
    rng = np.random.default_rng(201)
    disp = np.moveaxis(random_displacement(shape, 4.0, 6.0, rng), 0, -1)
    disp[60:120, 60:120, 80:140] += rng.normal(0.0, 1.2, size=(60, 60, 60, 3))
    fields = tmp_path / "fields"
    fields.mkdir()
    np.savez(fields / "disp_0001_0001.npz", np.asarray(disp, dtype=np.float32))  # gzip would take 10 s
    official.evaluate_L2R(str(fields), str(root), str(tmp_path / "official.json"), str(config))
    theirs = json.loads((tmp_path / "official.json").read_text())["cases"]["0001_0000<--0001_0001"]
    ours = evaluate_fields(root, fields, config=config)
    assert not ours["failed"] and len(ours["cases"]) == 1
    case = ours["cases"][0]
    assert case["folding_percent"] > 0
    for method, key in (("LogJacDetStd", "sdlogj_official"), ("TRE_lm", "tre_lm"), ("TRE_kp", "tre_kp")):
        assert case[key] == pytest.approx(theirs[method]["mean"], abs=1e-5, rel=1e-5), method
