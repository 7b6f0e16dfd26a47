"""One base for every typed configuration: dataclass fields, YAML in and out, flag overrides.

A configuration is a ``@dataclass`` that subclasses :class:`ConfigBase` and implements
``validate()`` (normalise values in place, raise :class:`~medfoundry.errors.ConfigError` naming the
field). Everything else (unknown keys with close matches, YAML loading with the file named in
the error, atomic saving, ``replace`` with ``None`` meaning "flag not given") is written once here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import ConfigError
from .utils import atomic_write_text, look_up_option

__all__ = ["ConfigBase"]

C = TypeVar("C", bound="ConfigBase")


def _plain(value: Any) -> Any:
    """Tuples become lists (YAML's safe dumper has no tuple) recursively."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ConfigBase:
    """Mixin for ``@dataclass`` configurations (no fields of its own)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise and check the fields; raise ConfigError naming the bad one."""

    def bad(self, name: str, expected: str) -> ConfigError:
        """The error for field ``name``: what was expected, what was found."""
        return ConfigError(f"config field {name!r}: expected {expected}, got {getattr(self, name)!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], source: str = "config") -> C:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of config fields, got {type(data).__name__}")
        known = cls.field_names()
        for key in data:
            if key not in known:
                look_up_option(str(key), known, what=f"config field in {source}")
        try:
            return cls(**dict(data))
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from err

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.field_names()}

    def save(self, path: str | Path) -> None:
        """Write the configuration as YAML, atomically."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self: C, **overrides: Any) -> C:
        """A validated copy with ``overrides`` applied; ``None`` values are ignored (flag not given)."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return type(self).from_dict(data, source="overrides")

    def differences(self, other: "ConfigBase") -> list[str]:
        """Fields whose values differ between two configurations."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b.get(k)]
