"""Test-time methods of the 2D heads (the inference seam): TTA inverts its transforms, entropy
decreases, only the norm affines move, reset restores, the saved model is untouched."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from head_runs import save_toy_run
from medfoundry.errors import ConfigError
from medfoundry.inference import compose, predict
from medfoundry.inference.predictors import apply_transform, invert_transform, tta, tta_transforms
from medfoundry.robustness.adapt import AdaptConfig, norm_affine_parameters
from medfoundry.robustness.head_adapt import HeadAdapter
from medfoundry.robustness.head_eval import evaluate_heads, load_run_model


@pytest.fixture(scope="module")
def run(toy_db, tmp_path_factory):
    return save_toy_run(toy_db, tmp_path_factory.mktemp("head_run"))


@pytest.mark.parametrize("dims,count", [(2, 8), (3, 16)])
def test_tta_transforms_are_distinct_and_invert(dims, count):
    x = torch.arange(float(4 ** dims)).reshape(1, 1, *([4] * dims))
    transforms = tta_transforms(dims)
    assert len(transforms) == count and transforms[0] == (0, ())
    images = {tuple(apply_transform(x, t, (-2, -1)).flatten().tolist()) for t in transforms}
    assert len(images) == count  # no symmetry counted twice
    for t in transforms:
        assert torch.equal(invert_transform(apply_transform(x, t, (-2, -1)), t, (-2, -1)), x)
    assert len(tta_transforms(dims, rotate=False)) == 2 ** dims


class _Pointwise(torch.nn.Module):
    """Per-pixel logits (equivariant to flips and rotations) and their spatial mean (invariant)."""

    task_specs = {"seg": SimpleNamespace(kind="segmentation"), "cls": SimpleNamespace(kind="classification")}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 3, 1)

    def forward(self, image, task):
        out = self.conv(image)
        return out if task == "seg" else out.mean((2, 3))


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_tta_of_an_equivariant_model_changes_nothing(task):
    model, x = _Pointwise(), torch.rand(2, 1, 6, 5)  # not square: quarter turns swap the axes
    with torch.no_grad():
        plain = torch.softmax(model(x, task), 1)
        averaged = torch.softmax(compose(tta())(model, task, x), 1)
    assert averaged.shape == plain.shape
    torch.testing.assert_close(averaged, plain, atol=1e-5, rtol=1e-4)


def test_tta_refuses_a_detection_head(toy_db, run):
    model = load_run_model(run)
    with pytest.raises(ValueError, match="detection"):
        predict(model, "toy_det", np.stack([toy_db.image("toy_det", 0)]), predictor=compose(tta()))


@pytest.mark.parametrize("task,method", [("toy_cls", "entropy"), ("toy_seg", "entropy"), ("toy_cls", "etta"),
                                         ("toy_seg", "etta")])
def test_entropy_decreases_and_reset_restores(toy_db, run, task, method):
    model = load_run_model(run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = HeadAdapter(AdaptConfig(method=method, steps=4, lr=5e-2, threshold=1.0))
    images = np.stack([toy_db.image(task, i) for i in range(3)])
    preds = predict(model, task, images, predictor=compose(adapter))
    assert len(preds) == 3 and len(adapter.records) == 3
    for r in adapter.records:
        assert r["loss_after"] < r["loss_before"]
        assert r["seconds"] > 0 and r["peak_memory_mb"] > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # reset per image


def test_continual_moves_only_norm_affines(toy_db, run):
    model = load_run_model(run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = HeadAdapter(AdaptConfig(method="entropy", steps=2, lr=5e-2, mode="continual"))
    predict(model, "toy_cls", np.stack([toy_db.image("toy_cls", i) for i in range(2)]), predictor=compose(adapter))
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    norm_ids = {id(p) for p in norm_affine_parameters(model)}
    names = {n for n, p in model.named_parameters() if id(p) in norm_ids}
    assert moved and moved <= names
    assert any("trunk.encoder" in n for n in names)  # the encoders' channel LayerNorm / GroupNorm count
    adapter.reset()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_evaluation_with_adaptation_leaves_the_model_file_untouched(toy_db, run, tmp_path):
    weights = run / "model" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    report = evaluate_heads([run], toy_db.root, "toy_seg", methods=("none", "entropy", "etta"), device="cpu",
                            batch_size=4, out=tmp_path / "r.json")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    for method, entry in report["methods"].items():
        assert entry["primary_metric"] == "dice" and 0 <= entry["score"] <= 1 and 0 <= entry["ece"] <= 1
        assert entry["seconds_per_case"] > 0 and entry["peak_memory_mb"] > 0
    assert report["methods"]["entropy"]["adapt"]["loss_after"] < report["methods"]["entropy"]["adapt"]["loss_before"]
    assert (tmp_path / "r.json").is_file() and (tmp_path / "r_reliability.png").is_file()


def test_bad_method_and_detection_task_are_refused(toy_db, run):
    with pytest.raises(ConfigError, match="--adapt"):
        evaluate_heads([run], toy_db.root, "toy_cls", methods=("tent",), device="cpu")
    with pytest.raises(ConfigError, match="detection"):
        evaluate_heads([run], toy_db.root, "toy_det", device="cpu")


def test_volume_tta_with_axial_rotations():
    from medfoundry.inference.sliding_window import SlidingWindowPredictor
    from medfoundry.robustness.adapt import TestTimeAdapter

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 1).eval()  # pointwise: every flip and turn must give the same map back
    image = torch.rand(1, 9, 7, 6)  # X != Y: a quarter turn swaps them
    plain = SlidingWindowPredictor(net, (4, 4, 4), "softmax")(image)
    window = SlidingWindowPredictor(net, (4, 4, 4), "softmax")
    adapter = TestTimeAdapter(net, window, AdaptConfig(method="tta", rotate=True))
    assert window.tta is False  # the adapter runs the 16 transforms itself
    torch.testing.assert_close(adapter(image), plain, atol=1e-5, rtol=1e-4)
    calls = []
    window.model = lambda b: (calls.append(1), net(b))[1]
    adapter(image)
    plain_calls = len(calls)
    calls.clear()
    SlidingWindowPredictor(window.model, (4, 4, 4), "softmax")(image)
    assert plain_calls == 16 * len(calls)
