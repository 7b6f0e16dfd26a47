"""The CLI starts without torch or MONAI, and no sub-command is silently missing."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

EXPECTED_COMMANDS = {"data", "l2r", "evaluate", "models", "pretrain", "extract", "info", "transfer", "register",
                     "segment", "shift"}


def test_importing_the_cli_app_imports_neither_torch_nor_monai():
    code = ("import json, sys; import medfoundry.cli.main; "
            "print(json.dumps(sorted(m for m in ('torch', 'monai', 'matplotlib', 'pandas', 'scipy.signal') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_every_area_is_mounted():
    from medfoundry.cli.main import app

    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert EXPECTED_COMMANDS <= names, EXPECTED_COMMANDS - names


def test_help_of_every_sub_app_renders():
    from medfoundry.cli.main import app

    runner = CliRunner()
    for name in sorted(EXPECTED_COMMANDS):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
