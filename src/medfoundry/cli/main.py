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
    ("medfoundry.models.cli", "app", "models"),
]
_TOP_LEVEL = [
    "medfoundry.cli.train",  # pretrain, extract, info
    "medfoundry.cli.transfer",  # transfer
    "medfoundry.cli.register",  # register (and `l2r run`)
    "medfoundry.cli.segment",  # segment (3D), and `data import volumes3d`
]


def _assemble() -> None:
    for module_name, attr, name in _SUBAPPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        app.add_typer(getattr(module, attr), name=name)
    for module_name in _TOP_LEVEL:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.register(app)


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
