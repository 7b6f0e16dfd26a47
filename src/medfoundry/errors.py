"""One exception family for the whole package.

The CLI turns any ``MedfoundryError`` into a single line and a non-zero exit code, so every
message must stand on its own: which file, which field, what was expected, what was found.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MedfoundryError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "RegistrationError",
]


class MedfoundryError(Exception):
    """Base class of every error the package raises on purpose."""


class DataError(MedfoundryError):
    """Bad or missing input data.

    Args:
        message: what is wrong and what was expected.
        path: the offending file or folder, if any.
        field: the offending field (manifest key, CSV column, array name), if any.
    """

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.message = message
        prefix = ""
        if self.path is not None:
            prefix += f"{self.path}: "
        if field is not None:
            prefix += f"[{field}] "
        super().__init__(prefix + message)


class ConfigError(MedfoundryError):
    """A configuration value or CLI option that cannot be used."""


class CheckpointError(MedfoundryError):
    """A checkpoint that is missing, corrupt or does not match the run."""


class RegistrationError(MedfoundryError):
    """Registration inputs (images, fields, Learn2Reg files) that cannot be used."""
