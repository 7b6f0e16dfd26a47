"""`make-synthetic --with-3d`: held-out 3D phantom tasks beside the 2D ones, byte-identical per seed."""

from __future__ import annotations

import pytest

from medfoundry.data.inspect import summarize
from medfoundry.data.synthetic import SYNTHETIC_3D_TASKS, make_synthetic_database
from medfoundry.data.validate import validate_database
from medfoundry.data.volumes3d import VolumeTask
from medfoundry.errors import ConfigError


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _build(out, seed, with_3d=True):
    return make_synthetic_database(out, seed=seed, tasks=["mri_lesion_seg"], image_size=32, _n_override=3,
                                   progress=False, with_3d=with_3d, _cases_3d=(2, 1))


@pytest.mark.slow
def test_with_3d_adds_valid_held_out_tasks_byte_identical_per_seed(tmp_path):
    _build(tmp_path / "a", seed=5)
    problems = validate_database(tmp_path / "a")  # 3 2D samples leave empty val/test splits: warnings only
    assert [p for p in problems if not p.path.endswith("mri_lesion_seg/splits.json")] == []
    names = [s["name"] for s in summarize(tmp_path / "a")]
    assert names == ["mri_lesion_seg", *SYNTHETIC_3D_TASKS]
    brain = VolumeTask.open(tmp_path / "a", "brain_tumour3d")
    assert brain.channel_names == ("T1", "T1c", "T2", "FLAIR") and brain.classes == ("background", "NCR", "ED", "ET")
    assert [c.split for c in brain.cases].count("test") == 1 and brain.regions == "WT=1,2,3;TC=1,3;ET=3"
    assert (tmp_path / "a" / "raw3d" / "brain_tumour3d" / "imagesTs").is_dir()  # NIfTI for `segment predict`
    assert "/.a.partial" not in (brain.root / "volumes3d.json").read_text()  # no temporary path recorded
    _build(tmp_path / "b", seed=5)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    _build(tmp_path / "c", seed=6, with_3d=["kidney3d"])
    assert (VolumeTask.open(tmp_path / "c", "kidney3d").label(0).tobytes()
            != VolumeTask.open(tmp_path / "a", "kidney3d").label(0).tobytes())
    assert not (tmp_path / "c" / "tasks" / "brain_tumour3d").exists()


def test_unknown_3d_task_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="brain_tumor3d.*did you mean brain_tumour3d"):
        _build(tmp_path / "x", seed=0, with_3d=["brain_tumor3d"])
    assert not (tmp_path / "x").exists()
