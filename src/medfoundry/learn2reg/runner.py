"""Register every pair of a Learn2Reg split and write the fields as the challenge expects them.

``run_split`` is what ``medfoundry l2r run`` calls. It imports the registration method (torch)
only when called, so ``medfoundry.learn2reg`` stays importable without torch. A pair that fails
is recorded with its error in the returned report (and ``failures.json``) while the others go on;
fields already written are kept unless ``overwrite``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import MedfoundryError, RegistrationError
from ..utils import atomic_write_json
from .files import Learn2RegDataset

__all__ = ["SplitRun", "run_split"]


@dataclass
class SplitRun:
    """What ``run_split`` did: fields written or kept, runtimes (s) and failures by pair id."""

    out: Path
    runtimes: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def runtimes_path(self) -> Path:
        return self.out / "runtimes.json"


def _read_runtimes(path: Path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def run_split(dataset: str | Path, out: str | Path, split: str = "val", *, method: str | None = None,
              preset: str | None = None, config_file: str | Path | None = None,
              overrides: Mapping[str, Any] | None = None, device: str = "auto", use_masks: bool = True,
              overwrite: bool = False, progress: Any = None) -> SplitRun:
    """Register the pairs of ``split`` and save ``disp_*.nii.gz`` fields (fixed affine kept).

    Args:
        dataset: a Learn2Reg dataset folder (``TASK_dataset.json``, ``imagesTr``...).
        out: folder for the fields, ``runtimes.json`` (seconds per pair id),
            ``registration_config.json`` and, when a pair failed, ``failures.json``.
        split: ``val`` or ``test``.
        method, preset, config_file, overrides: as :func:`medfoundry.registration.register`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        use_masks: pass ``masks*/`` files to the method when they exist.
        overwrite: recompute fields that exist already.
        progress: optional callable ``progress(pair_id, seconds_or_None)`` after each pair.

    Returns:
        :class:`SplitRun` with runtimes and failures (pair id -> one-line error).
    """
    from ..registration import register

    if split not in ("val", "test"):
        raise RegistrationError(f"split {split!r}: expected val or test")
    data = Learn2RegDataset(dataset)
    pairs = data.pairs(split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = SplitRun(out=out)
    if run.runtimes_path.is_file() and not overwrite:
        run.runtimes = _read_runtimes(run.runtimes_path)
    values = dict(overrides or {})
    config_written = False
    for pair in pairs:
        target = out / f"{pair.field_stem}.nii.gz"
        if target.is_file() and not overwrite and pair.pair_id in run.runtimes:
            run.skipped.append(pair.pair_id)
            if progress is not None:
                progress(pair.pair_id, None)
            continue
        start = time.perf_counter()
        try:
            masks = (None, None)
            if use_masks:
                masks = tuple(p if p.is_file() else None for p in (data.mask_path(pair.fixed), data.mask_path(pair.moving)))
            labels = (None, None)
            if values.get("features") == "labels":
                labels = (data.label_path(pair.fixed), data.label_path(pair.moving))
            result = register(data.path(pair.fixed), data.path(pair.moving), method=method, preset=preset,
                              masks=masks, labels=labels, config_file=config_file, device=device, **values)
            result.save({"field": target})
        except MedfoundryError as err:
            run.failures[pair.pair_id] = str(err)
        else:
            run.runtimes[pair.pair_id] = round(result.runtime_s, 4)
            atomic_write_json(run.runtimes_path, run.runtimes)
            if not config_written:
                # Once per call (every pair of a call shares the settings), so a rerun with other
                # settings does not leave the old ones recorded.
                atomic_write_json(out / "registration_config.json", {"preset": preset, "config": result.config})
                config_written = True
        if progress is not None:
            progress(pair.pair_id, time.perf_counter() - start)
    failures_path = out / "failures.json"
    if run.failures:
        atomic_write_json(failures_path, run.failures)
    elif failures_path.is_file():
        failures_path.unlink()
    return run
