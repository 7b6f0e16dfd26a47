"""The ``brain_mr_fast`` preset: named, resolved, cheaper than brain_mr, and still registers."""

from __future__ import annotations

import numpy as np
import pytest
from reg_world_helpers import mni_2mm

from medfoundry.randomfields import random_displacement, warp_array
from medfoundry.registration import list_presets, register
from medfoundry.registration.api import warp_volume
from medfoundry.registration.configs import HybridConfig
from medfoundry.registration.presets import PRESETS, get_preset, resolve_config


def test_fast_preset_is_listed_and_resolves():
    assert "brain_mr_fast" in list_presets()
    assert PRESETS["brain_mr_fast"].note
    method, cfg = resolve_config(preset="brain_mr_fast")
    assert method == "hybrid" and isinstance(cfg, HybridConfig)
    assert cfg == get_preset("brain_mr_fast")
    default = HybridConfig()
    # Every change is a cheaper setting of a stage's cost, the rest is brain_mr's.
    assert cfg.adam_iterations < default.adam_iterations
    assert cfg.search_radius < default.search_radius
    assert len(cfg.coupling_weights) < len(default.coupling_weights)
    assert not cfg.inverse_consistency and default.inverse_consistency
    assert 0 < cfg.adam_channels < 12
    assert cfg.regularisation == default.regularisation and cfg.grid_spacing == default.grid_spacing
    # The default is untouched: brain_mr stays the hybrid defaults.
    assert get_preset("brain_mr") == default
    # Overrides still apply on top of the preset.
    _, tuned = resolve_config(preset="brain_mr_fast", adam_iterations="12")
    assert tuned.adam_iterations == 12 and not tuned.inverse_consistency


@pytest.fixture(scope="module")
def pair():
    """A 40^3 crop of the 2 mm MNI152 template, the fixed image warped by a known smooth field."""
    base = mni_2mm()
    centre = [s // 2 for s in base["image"].shape]
    crop = tuple(slice(c - 20, c + 20) for c in centre)
    image, labels = base["image"][crop], base["labels"][crop]
    rng = np.random.default_rng(5)
    u = random_displacement(image.shape, 3.0, 8.0, rng)
    fixed = warp_array(image, u) + 0.01 * rng.standard_normal(image.shape).astype(np.float32)
    return {"fixed": fixed.astype(np.float32), "moving": image.astype(np.float32),
            "fixed_labels": warp_array(labels, u, order=0), "moving_labels": labels}


def _dice(disp: np.ndarray, p: dict) -> float:
    inner = (slice(4, -4),) * 3  # crop borders map outside the crop whatever the field
    warped = warp_volume(p["moving_labels"], disp, order=0)[inner]
    fixed = p["fixed_labels"][inner]
    return float(np.mean([2 * np.sum((warped == k) & (fixed == k)) / (np.sum(warped == k) + np.sum(fixed == k))
                          for k in (1, 2)]))


def test_fast_preset_improves_dice_over_identity(pair):
    result = register(pair["fixed"], pair["moving"], preset="brain_mr_fast", device="cpu")
    assert result.config["adam_iterations"] == PRESETS["brain_mr_fast"].overrides["adam_iterations"]
    before, after = _dice(np.zeros_like(result.disp), pair), _dice(result.disp, pair)
    assert 1 - after < 0.7 * (1 - before), (before, after)  # the overlap error falls by 30 % or more


def test_register_command_imports_nibabel_without_pydicom():
    # A fresh interpreter: the test session itself may have imported pydicom already.
    import subprocess
    import sys

    code = ("import sys; from medfoundry.cli.register import _import_nibabel_without_pydicom as f; f(); "
            "import nibabel.nifti1 as n; assert 'pydicom' not in sys.modules and not n.have_dicom; "
            "import pydicom; print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_register_command_ends_its_own_process_only(monkeypatch):
    from medfoundry.cli import register as cli_register

    assert not cli_register._is_console_run()  # under pytest: never os._exit
    monkeypatch.setattr("sys.argv", ["/usr/bin/medfoundry", "register", "f.nii.gz", "m.nii.gz"])
    assert cli_register._is_console_run()
    monkeypatch.setattr("sys.argv", ["/x/medfoundry/__main__.py", "l2r", "run"])
    assert not cli_register._is_console_run()
