"""``medfoundry.learn2reg`` and ``medfoundry.evaluation`` stay numpy/scipy only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["medfoundry.learn2reg", "medfoundry.evaluation", "medfoundry.io"])
def test_import_does_not_import_torch(module):
    code = (f"import json, sys; import {module}; "
            "print(json.dumps([m for m in ('torch', 'monai') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
