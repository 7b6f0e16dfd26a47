import os

import pytest

from medfoundry.errors import ConfigError
from medfoundry.utils import atomic_path, atomic_write_text, look_up_option


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_gives_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_look_up_option_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean resnet_small"):
        look_up_option("resnet_smal", ["resnet_small", "convnext_small"], what="encoder")
