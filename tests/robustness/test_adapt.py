"""Test-time adaptation: entropy decreases, only norm affines move, reset restores, the model file
is untouched, and predict reports time and memory per case."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from medfoundry.config import ConfigBase
from medfoundry.errors import ConfigError
from medfoundry.robustness.adapt import AdaptConfig, norm_affine_parameters
from medfoundry.segmentation import VolumePredictor, predict_folder


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _case(folder):
    from medfoundry.data.adapters.nnunet_folder import find_nnunet_cases, normalize_case, read_case_image

    return torch.as_tensor(normalize_case(read_case_image(find_nnunet_cases(folder / "imagesTr")[0]), "zscore"))


@pytest.mark.slow  # about 5 s each on 2 cores (the session fixture trains two tiny runs first)
@pytest.mark.parametrize("method", ["entropy", "etta"])
def test_entropy_decreases_and_reset_restores(robust_runs, robust_folder, method):
    pred = VolumePredictor(robust_runs[0], device="cpu", threads=1,
                           adapt=AdaptConfig(method=method, steps=4, lr=5e-2, threshold=1.0))
    before = {k: v.clone() for k, v in pred.net.state_dict().items()}
    x = _case(robust_folder)
    stats = pred.adapter.adapt(x)
    assert stats["loss_after"] < stats["loss_before"]
    moved = {k for k, v in pred.net.state_dict().items() if not torch.equal(v, before[k])}
    norm_ids = {id(p) for p in norm_affine_parameters(pred.net)}
    names = {n for n, p in pred.net.named_parameters() if id(p) in norm_ids}
    assert moved and moved <= names  # only normalisation affines changed
    pred.adapter.reset()
    assert all(torch.equal(v, before[k]) for k, v in pred.net.state_dict().items())
    pred.adapter(x)  # a whole case in reset mode leaves the weights as they were
    assert all(torch.equal(v, before[k]) for k, v in pred.net.state_dict().items())
    assert pred.adapter.last["seconds"] > 0 and pred.adapter.last["peak_memory_mb"] > 0


def test_continual_mode_carries_the_weights(robust_runs, robust_folder):
    pred = VolumePredictor(robust_runs[0], device="cpu", threads=1,
                           adapt=AdaptConfig(method="entropy", steps=2, lr=5e-2, mode="continual"))
    before = [p.detach().clone() for p in norm_affine_parameters(pred.net)]
    pred.adapter(_case(robust_folder))
    assert any(not torch.equal(a, b) for a, b in zip(before, norm_affine_parameters(pred.net)))


def test_predict_folder_with_adaptation_keeps_the_model_file(robust_runs, robust_folder, tmp_path):
    weights = robust_runs[0] / "model" / "model.safetensors"
    digest = _sha(weights)
    report = predict_folder(robust_runs[0], robust_folder / "imagesTr", tmp_path / "p", device="cpu", threads=1,
                            labels=robust_folder / "labelsTr", adapt=AdaptConfig(method="entropy", steps=2))
    assert _sha(weights) == digest
    case = report["cases"][0]
    assert case["seconds"] > 0 and case["peak_memory_mb"] > 0 and case["methods"][0]["method"] == "entropy"
    assert 0.0 <= report["ece"] <= 1.0 and np.isfinite(case["ece"])
    assert (tmp_path / "p" / "reliability.png").is_file() and (tmp_path / "p" / "reliability.svg").is_file()
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["adapt"]["method"] == "entropy"


def test_none_is_the_plain_sliding_window_and_tta_switches_flips(robust_runs, robust_folder):
    from medfoundry.data.adapters.nnunet_folder import find_nnunet_cases, normalize_case, read_case_image

    image = read_case_image(find_nnunet_cases(robust_folder / "imagesTr")[1])
    pred = VolumePredictor(robust_runs[0], device="cpu", threads=1)
    assert pred.adapter.config.method == "none" and pred.window.tta is False
    plain = pred.window(normalize_case(image, pred.config["intensity"])).numpy()
    np.testing.assert_array_equal(pred.predict_probabilities(image), plain)
    flips = VolumePredictor(robust_runs[0], device="cpu", threads=1, adapt="tta")
    assert flips.window.tta is True
    assert not np.array_equal(flips.predict_probabilities(image), plain)


def test_bad_adapt_settings_are_config_errors():
    assert issubclass(AdaptConfig, ConfigBase)
    with pytest.raises(ConfigError, match="method"):
        AdaptConfig(method="tent")
    with pytest.raises(ConfigError, match="mode"):
        AdaptConfig(method="entropy", mode="sometimes")
