"""Command-line interface: thin typer apps over the public API."""
