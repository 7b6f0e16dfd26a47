"""The registration-method seam: registry, per-method configs, presets as (method, overrides)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml

from medfoundry.errors import ConfigError
from medfoundry.registration import (
    HybridConfig,
    LinearConfig,
    MethodConfig,
    get_method,
    get_preset,
    list_methods,
    register,
    register_method,
)
from medfoundry.registration import methods as methods_module
from medfoundry.registration.methods import MethodInput, MethodOutput
from medfoundry.registration.presets import PRESETS, resolve_config


def test_builtin_methods_and_their_configs():
    assert {"hybrid", "affine", "rigid"} <= set(list_methods())
    assert get_method("hybrid").config_class is HybridConfig
    assert get_method("affine").config_class is LinearConfig
    assert get_method("rigid").default_config().model == "rigid"
    with pytest.raises(ConfigError, match="did you mean hybrid"):
        get_method("hybird")


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="already registered"):
        register_method("hybrid", HybridConfig)(lambda pair, config: None)


@dataclass
class ShiftConfig(MethodConfig):
    """A constant displacement (voxels): the smallest method there is."""

    shift: float = 1.0

    def validate(self) -> None:
        self._check(abs(self.shift) < 100, f"shift must be below 100 voxels, found {self.shift}")


@pytest.fixture()
def shift_method():
    name = "constant_shift_for_tests"

    @register_method(name, ShiftConfig, description="constant displacement along the first axis")
    def run(pair: MethodInput, config: ShiftConfig) -> MethodOutput:
        disp = torch.zeros((1, len(pair.shape)) + pair.shape)
        disp[:, 0] = config.shift
        return MethodOutput(disp)

    yield name
    methods_module._METHODS.pop(name)  # the registry is process-wide: leave it as found


def test_a_new_method_plugs_in_without_touching_src(shift_method):
    fixed = np.random.default_rng(0).random((10, 12, 8)).astype(np.float32)
    result = register(fixed, fixed, method=shift_method, shift="2.5", device="cpu")
    assert result.method == shift_method and result.config["shift"] == 2.5
    assert np.all(result.disp[..., 0] == 2.5) and np.all(result.disp[..., 1:] == 0)
    # the warp follows the field: out(x) = moving(x + 2.5 e0), edges filled as outside the grid
    np.testing.assert_allclose(result.warped_image[:6], 0.5 * (fixed[2:8] + fixed[3:9]), atol=1e-5)
    with pytest.raises(ConfigError, match="did you mean shift"):
        register(fixed, fixed, method=shift_method, shfit=1.0, device="cpu")


def test_presets_are_method_plus_overrides():
    for name, preset in PRESETS.items():
        config = get_preset(name)
        assert isinstance(config, get_method(preset.method).config_class)
        for key, value in preset.overrides.items():
            assert getattr(config, key) == value
    method, config = resolve_config(preset="multiseq_rigid", iterations="7")
    assert method == "rigid" and config.iterations == 7 and config.model == "rigid"
    with pytest.raises(ConfigError, match="is for method 'hybrid', not 'affine'"):
        resolve_config(method="affine", preset="lung_ct")
    with pytest.raises(ConfigError, match="fixes model='rigid'"):
        resolve_config(method="rigid", model="affine")
    with pytest.raises(ConfigError, match="takes a LinearConfig"):
        resolve_config(method="affine", config=HybridConfig())
    # hybrid's defaults are the brain_mr preset
    assert resolve_config()[1] == get_preset("brain_mr")


def test_method_configs_round_trip_through_yaml(tmp_path):
    config = LinearConfig(model="rigid", similarity="ncc", iterations=12)
    config.save(tmp_path / "linear.yaml")
    assert LinearConfig.from_yaml(tmp_path / "linear.yaml") == config
    (tmp_path / "hybrid.yaml").write_text(yaml.safe_dump({"preset": "lung_ct", "regularisation": 0.5}))
    method, loaded = resolve_config(config_file=tmp_path / "hybrid.yaml")
    assert method == "hybrid" and loaded.regularisation == 0.5
    assert loaded.grid_spacing == get_preset("lung_ct").grid_spacing
    with pytest.raises(ConfigError, match="similarity"):
        LinearConfig(similarity="mutual_information")
    with pytest.raises(ConfigError, match="not a LinearConfig preset"):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"preset": "lung_ct"}))
        LinearConfig.from_yaml(tmp_path / "bad.yaml")
