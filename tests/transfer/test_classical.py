"""The classical baseline (``--encoder classical``): features, the probe on them, the sweep hook."""

import json

import numpy as np
import pytest

from medfoundry.data import DatabaseWriter
from medfoundry.data.tasks import TaskSpec
from medfoundry.errors import ConfigError
from medfoundry.transfer import run_sweep
from medfoundry.transfer.classical import FEATURE_NAMES, ClassicalEncoder, classical_features
from medfoundry.transfer.sources import not_applicable, parse_encoder

TINY = dict(fractions=(1.0,), seeds=1, max_epochs=30, min_steps=10, max_steps=50, patience=5, n_boot=10,
            progress=False, device="cpu", eval_batch_size=256, goal_fractions=False)
D = len(FEATURE_NAMES)


def test_features_are_deterministic_per_channel_and_finite():
    rng = np.random.default_rng(0)
    images = rng.random((4, 3, 20, 20)).astype(np.float32)
    images[1] = 0.3  # a constant image: no NaN from skewness, kurtosis or the GLCM correlation
    f = classical_features(images)
    assert f.shape == (4, 3 * D) and f.dtype == np.float32 and np.isfinite(f).all()
    assert np.array_equal(f, classical_features(images.copy()))
    block = {n: k for k, n in enumerate(FEATURE_NAMES)}
    for c in range(3):
        row = f[0, c * D:(c + 1) * D]
        assert row[block["mean"]] == pytest.approx(images[0, c].mean(), abs=1e-6)
        assert row[block["p50"]] == pytest.approx(np.median(images[0, c]), abs=1e-6)
        assert row[[block[f"hist{b}"] for b in range(16)]].sum() == pytest.approx(1.0)
        assert row[[block[f"lbp{b}"] for b in range(10)]].sum() == pytest.approx(1.0)
    assert f[1, block["std"]] == 0.0 and f[1, block["mean"]] == pytest.approx(0.3)
    # one image's features do not depend on the rest of the batch
    assert np.array_equal(classical_features(images[2:3]), f[2:3])
    with pytest.raises(ConfigError, match="N, C, H, W"):
        classical_features(images[0])


def test_dense_and_3d_tasks_are_refused_with_a_reason():
    seg = TaskSpec("s", "segmentation", ("bg", "fg"), "x-ray", 2, (16, 16), 1)
    cls = TaskSpec("c", "classification", ("a", "b"), "x-ray", 2, (16, 16), 1)
    src = parse_encoder("classical")
    assert src.kind == "classical" and src.label == "classical"
    assert parse_encoder("hand=classical").label == "hand"
    assert not_applicable(src, cls, "frozen") is None
    assert "fine-tune" in not_applicable(src, cls, "finetune")
    assert "segmentation" in not_applicable(src, seg, "frozen")
    assert not_applicable(parse_encoder("random"), seg, "finetune") is None
    with pytest.raises(ConfigError, match="classification, multilabel"):
        ClassicalEncoder().add_task(seg)


def _intensity_db(root, shuffled: bool, n: int = 500):
    """Two classes told apart by mean brightness only (0.40 vs 0.55, per-pixel noise 0.15);
    ``shuffled`` draws the labels independently of the images."""
    rng = np.random.default_rng(1)
    spec = TaskSpec("bright_cls", "classification", ("dim", "bright"), "x-ray", 2, (16, 16), 1, group="downstream")
    brightness = np.arange(n) % 2
    labels = rng.permutation(brightness) if shuffled else brightness
    with DatabaseWriter(root, name="bright") as w:
        tw = w.add_task(spec, n=n, image_dtype="float32")
        for i in range(n):
            img = 0.40 + 0.15 * brightness[i] + 0.15 * rng.standard_normal((1, 16, 16))
            tw.set_sample(i, np.clip(img, 0, 1).astype(np.float32), int(labels[i]))
        order = rng.permutation(n)
        tw.set_splits({"train": order[:300], "val": order[300:400], "test": order[400:]})
    return root


@pytest.mark.parametrize("shuffled", [False, True])
def test_beats_chance_on_intensity_and_is_at_chance_on_shuffled_labels(tmp_path, shuffled):
    db = _intensity_db(tmp_path / "db", shuffled)
    store = run_sweep(db, ["classical"], tmp_path / "out", baseline=False, modes=("frozen",), fail_fast=True, **TINY)
    (r,) = store.records
    assert r["status"] == "ok" and r["encoder_kind"] == "classical" and r["n_test"] == 100
    if shuffled:
        assert abs(r["primary"] - 0.5) <= 0.15, r["primary"]
    else:
        assert r["primary"] >= 0.85, r["primary"]


def test_cli_transfer_classical_end_to_end(toy_db, tmp_path, capsys):
    from medfoundry.cli.main import main

    out = tmp_path / "out"
    code = main(["transfer", "-e", "classical", "-d", str(toy_db.root), "-t", "toy_cls", "-t", "toy_multilabel",
                 "-t", "toy_seg", "-o", str(out), "--fractions", "0.5,1", "--seeds", "1", "--max-steps", "4",
                 "--no-baseline", "--no-progress", "--device", "cpu", "--no-report"])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())
    assert {(r["task"], r["mode"], r["status"]) for r in records} == {
        ("toy_cls", "frozen", "ok"), ("toy_multilabel", "frozen", "ok")}
    assert len(records) == 4 and all(r["encoder"] == "classical" for r in records)
    skipped = json.loads((out / "config.json").read_text())["not_applicable"]
    reasons = {(s["task"], s["mode"]): s["reason"] for s in skipped}
    assert set(reasons) == {("toy_cls", "finetune"), ("toy_multilabel", "finetune"), ("toy_seg", "frozen"),
                            ("toy_seg", "finetune")}
    assert "fine-tune" in reasons[("toy_cls", "finetune")] and "segmentation" in reasons[("toy_seg", "frozen")]
    assert "skipped" in capsys.readouterr().err
