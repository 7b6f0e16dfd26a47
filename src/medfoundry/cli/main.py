"""Entry point ``medfoundry``: assembles the sub-apps and turns package errors into one line."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from ..errors import MedfoundryError

app = typer.Typer(
    name="medfoundry",
    help="Multi-task biomedical foundation models, transfer benchmarks and Learn2Reg-grade registration.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, name): a sub-app is mounted under `name`; a module exposing `register(app)`
# adds top-level commands. Each area owns its module so areas stay independent.
_SUBAPPS = [
    ("medfoundry.cli.data", "app", "data"),
    ("medfoundry.cli.l2r", "app", "l2r"),
    ("medfoundry.cli.evaluate", "app", "evaluate"),
    ("medfoundry.cli.models", "app", "models"),
    ("medfoundry.cli.shift", "app", "shift"),
]
_TOP_LEVEL = [
    "medfoundry.cli.train",  # pretrain, extract, info
    "medfoundry.cli.transfer",  # transfer
    "medfoundry.cli.register",  # register (and `l2r run`)
    "medfoundry.cli.segment",  # segment (3D), and `data import volumes3d`
]


def _assemble() -> None:
    # Every module is imported unconditionally: a broken or missing one must fail loudly here,
    # never make its sub-commands vanish from the CLI. The modules import only typer and rich at
    # module level (torch and MONAI load inside the commands), so this stays fast.
    for module_name, attr, name in _SUBAPPS:
        app.add_typer(getattr(importlib.import_module(module_name), attr), name=name)
    for module_name in _TOP_LEVEL:
        importlib.import_module(module_name).register(app)


_assemble()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a ``MedfoundryError`` becomes ``error: <message>`` and exit code 2."""
    try:
        app(args=argv, prog_name="medfoundry")
    except MedfoundryError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
