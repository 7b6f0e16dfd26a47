"""Every ```python block of docs/registration.md runs verbatim, in order, in one namespace."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "registration.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_registration_doc_code_runs(tmp_path, monkeypatch):
    from medfoundry.registration import methods

    blocks = _blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    # a real module, as a user's script would be (dataclasses look their module up)
    module = types.ModuleType("docs_registration")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        for index, block in enumerate(blocks):
            try:
                exec(compile(block, f"{DOC.name}[python block {index}]", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"docs/registration.md python block {index} fails: {err!r}") from err
    finally:
        methods._METHODS.pop("identity_example", None)  # registered by the doc's example
    # what the doc claims about its own example holds
    world = namespace["result"].world_disp()
    assert world.shape[-1] == 3
    first = namespace["register"](namespace["fixed"], namespace["moving"], method="rigid", device="cpu")
    centre = first.world_disp()[25, 30, 24]
    np.testing.assert_allclose(centre, [6.0, 0.0, 0.0], atol=1.0)
    assert sorted(namespace["written"]) == ["field", "meta", "warped_image", "world_field"]
    assert np.all(namespace["baseline"].disp == 0)
