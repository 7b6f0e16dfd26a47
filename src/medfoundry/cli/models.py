"""``medfoundry models``: list the encoder registry and describe checkpoint folders.

A thin layer over :func:`medfoundry.models.list_encoders` and the checkpoint ``config.json``;
mounted by ``medfoundry.cli.main`` as the ``models`` sub-app.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(help="Encoder registry and model checkpoints.", no_args_is_help=True)


@app.command("list")
def list_command(
    pattern: str = typer.Argument("*", help="Shell-style pattern on encoder names, e.g. 'resnet*'."),
    params: bool = typer.Option(False, "--params", help="Build each encoder to count its parameters (2D and 3D)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered encoders with their defaults (licence, weights source, description)."""
    from ..models.registry import create_encoder, encoder_defaults, list_encoders

    rows = []
    for name in list_encoders(pattern):
        d = encoder_defaults(name).to_dict()
        row = {"name": name, **d}
        if params:
            for dims in (2, 3):
                enc = create_encoder(name, spatial_dims=dims)
                row[f"params_{dims}d_millions"] = round(enc.num_parameters() / 1e6, 2)
                row["channels"] = [f["num_chs"] for f in enc.feature_info]
                row["reductions"] = [f["reduction"] for f in enc.feature_info]
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"encoders matching {pattern!r}")
    cols = ["name", "architecture", "normalization", "license", "weights_source", "params_millions", "description"]
    if params:
        cols[5:6] = ["params_2d_millions", "params_3d_millions", "channels"]
    for c in cols:
        table.add_column(c, no_wrap=c == "name")
    for row in rows:
        table.add_row(*[str(row.get(c)) for c in cols])
    Console().print(table)


@app.command("show")
def show_command(
    directory: Path = typer.Argument(..., help="Checkpoint folder written by save_pretrained."),
    as_json: bool = typer.Option(False, "--json", help="Print the config and parameter counts as JSON."),
) -> None:
    """Describe a checkpoint folder: encoder, adapters, tasks and parameter counts."""
    from ..models.checkpoint import CONFIG_NAME
    from ..models.foundation import FoundationModel, load_encoder

    config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8")) \
        if (directory / CONFIG_NAME).is_file() else None
    if config is not None and config.get("decoder_channels") is None:
        trunk = load_encoder(directory)
        counts = {"adapters": sum(p.numel() for p in trunk.adapters.parameters()),
                  "encoder": sum(p.numel() for p in trunk.encoder.parameters())}
        config = {**config, "tasks": []}
    else:
        model = FoundationModel.from_pretrained(directory)  # raises CheckpointError with the reason
        counts = model.parameter_counts()
        config = model.config()
    if as_json:
        typer.echo(json.dumps({"config": config, "parameters": counts}, indent=2))
        return
    console = Console()
    enc = config["encoder"]
    console.print(f"[bold]{directory}[/]: encoder {enc['name']} ({enc['spatial_dims']}D, "
                  f"in_channels {enc['in_channels']}), decoder_channels {config.get('decoder_channels')}")
    console.print("adapters: " + ", ".join(a["key"] for a in config["adapters"]))
    table = Table(title="tasks")
    for c in ("name", "kind", "modality", "channels", "classes", "head parameters"):
        table.add_column(c)
    for t in config["tasks"]:
        table.add_row(t["name"], t["kind"], t["modality"], str(t["channels"]), str(len(t["classes"])),
                      str(counts.get(f"head/{t['name']}", "")))
    console.print(table)
    console.print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if not k.startswith("head/")))
