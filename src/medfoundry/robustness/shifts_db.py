"""Shifted copies of database tasks: the engine of ``medfoundry shift make``.

For each source task ``T`` and each (corruption, severity) pair the new database gets a task
``T__<corruption>_s<severity>`` (task names allow only ``[a-z0-9_]``, so a double underscore
separates the source name from the condition), plus ``T__none_s0``, the in-distribution copy.
Every one of them is a complete task with the source's spec, classes, splits and targets:
train and val samples are copied byte for byte, and only the **test** samples are corrupted
(with :func:`medfoundry.robustness.shifts.corrupt`, the functions of the 3D folders). So a
benchmark scores one head on tasks that differ only in the test pixels, no test image enters a
train split, and the copies validate like their source. With ``test_samples=N`` (``shift make
--test-samples N``) each new task holds only the first N samples of each split (a large source
would otherwise be copied whole for every condition); the test pixels are the same as in the
full suite's copies.

Provenance: every sample's ``sources.json`` entry reads
``shift corruption=<c> severity=<s> seed=<seed> task=<T> index=<i>`` (then `` | `` and the
source's own entry, if any; train and val samples say ``corruption=none severity=0``), parsed
back by :func:`sample_provenance`; each task's ``extra.shift`` in ``database.yaml`` holds the
source database, task, corruption, severity and seed.

Which corruptions fit which task (:func:`valid_corruptions`): ``bias``, ``gamma``,
``gaussian``, ``blur`` and ``lowres`` fit every image; ``rician``, ``ghosting`` and
``motion`` (magnitude noise and k-space artefacts) only MR; ``ct`` (offset and scale of the
intensities) only CT; ``stain`` (HED jitter) only RGB microscopy. Whether a tomographic task
is CT or MR is read from ``--scanner``, else the spec's ``extra.scanner``, else
``extra.intensity`` (``ct``/``mr``, written by ``data from-volumes``), else a word ``ct`` or
``mr``/``mri`` in the task's name or description; when none says, only the generic ones fit.

Example:
    >>> make_shift_database("db", ["mri_lesion_det"], "db_shift", ["gaussian", "motion"], [1, 3, 5], seed=0)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .shifts import COLOUR_CORRUPTIONS, CORRUPTIONS, SEVERITIES, corrupt

__all__ = ["IN_DISTRIBUTION", "SCANNERS", "imaging_of", "valid_corruptions", "check_corruptions",
           "parse_db_corruptions", "shifted_task_name", "parse_shifted_task_name", "sample_provenance",
           "make_shift_database"]

IN_DISTRIBUTION = "none"  # corruption name of the severity-0 copy
SCANNERS = ("ct", "mr")
_GENERIC = ("bias", "gamma", "gaussian", "blur", "lowres")
_ONLY = {"rician": "mr", "ghosting": "mr", "motion": "mr", "ct": "ct", "stain": "rgb-microscopy"}
_WHERE = {"mr": "MR tasks", "ct": "CT tasks", "rgb-microscopy": "RGB (3-channel) microscopy tasks"}
_WORDS = {"ct": {"ct"}, "mr": {"mr", "mri"}}
_SAY = {"ct": "CT", "mr": "MR", "tomographic": "tomographic, CT or MR unknown", "rgb-microscopy": "RGB microscopy",
        "microscopy": "single-channel microscopy"}
_SEP = "__"
_PROVENANCE = re.compile(r"^shift corruption=(\w+) severity=(\d) seed=(-?\d+) task=(\w+) index=(\d+)(?: \| (.*))?$",
                         re.S)


def _scanner_of(spec: Any, scanner: str | None) -> str | None:
    if scanner is not None:
        return scanner
    extra = spec.extra or {}
    for key in ("scanner", "intensity"):
        if str(extra.get(key, "")).lower() in SCANNERS:
            return str(extra[key]).lower()
    words = set(re.split(r"[^a-z0-9]+", f"{spec.name} {spec.description}".lower().replace("_", " ")))
    hits = [s for s in SCANNERS if words & _WORDS[s]]
    return hits[0] if len(hits) == 1 else None


def imaging_of(spec: Any, scanner: str | None = None) -> str:
    """What a task's images are, for the corruption rule: ``ct``, ``mr``, ``tomographic``
    (CT or MR unknown), ``rgb-microscopy``, ``microscopy``, ``x-ray`` or ``other``.

    ``scanner`` (``ct``/``mr``) is used by tomographic tasks only.

    Raises:
        ConfigError: ``scanner`` other than ``ct``/``mr``.
    """
    modality = str(getattr(spec.modality, "value", spec.modality))
    if scanner is not None and scanner not in SCANNERS:
        raise ConfigError(f"--scanner: expected ct or mr, got {scanner!r}")
    if modality == "tomographic":
        return _scanner_of(spec, scanner) or "tomographic"
    if modality == "microscopic":
        return "rgb-microscopy" if spec.channels == 3 else "microscopy"
    return modality


def valid_corruptions(spec: Any, scanner: str | None = None) -> list[str]:
    """The corruptions that fit a task's modality (module docstring), in table order."""
    imaging = imaging_of(spec, scanner)
    return [c for c in (*CORRUPTIONS, *COLOUR_CORRUPTIONS) if c in _GENERIC or _ONLY.get(c) == imaging]


def check_corruptions(spec: Any, names: Sequence[str], scanner: str | None = None) -> None:
    """Raise a one-line :class:`ConfigError` for the first of ``names`` that does not fit the task."""
    fits = valid_corruptions(spec, scanner)
    for name in names:
        if name in fits:
            continue
        imaging = imaging_of(spec, scanner)
        hint = " (pass --scanner ct|mr)" if imaging == "tomographic" and _ONLY[name] in SCANNERS else ""
        raise ConfigError(f"--corruptions: {name!r} applies to {_WHERE[_ONLY[name]]} only; task {spec.name!r} is "
                          f"{_SAY.get(imaging, imaging)}{hint}; valid here: {', '.join(fits)}")


def parse_db_corruptions(text: str) -> list[str] | None:
    """``"bias,stain"`` -> names; ``"all"`` -> ``None`` (every corruption that fits each task).

    Raises:
        ConfigError: unknown names, or an empty list.
    """
    if text.strip() == "all":
        return None
    known = (*CORRUPTIONS, *COLOUR_CORRUPTIONS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"--corruptions: unknown corruption(s) {bad or text!r}; expected 'all' or a "
                          f"comma-separated list of {', '.join(known)}")
    return list(dict.fromkeys(names))


def shifted_task_name(task: str, corruption: str, severity: int) -> str:
    """``("xray_cls", "gaussian", 3)`` -> ``"xray_cls__gaussian_s3"``."""
    return f"{task}{_SEP}{corruption}_s{int(severity)}"


def parse_shifted_task_name(name: str) -> tuple[str, str, int] | None:
    """``"xray_cls__gaussian_s3"`` -> ``("xray_cls", "gaussian", 3)``; ``None`` for other names."""
    m = re.fullmatch(r"(.+?)__([a-z]+)_s(\d)", name)
    return None if m is None else (m.group(1), m.group(2), int(m.group(3)))


def sample_provenance(db: Any, task: str, index: int) -> dict[str, Any] | None:
    """What ``sources.json`` of a shifted task says about one sample: ``corruption``, ``severity``,
    ``seed``, ``source_task``, ``source_index`` and ``source`` (the source's own entry or ``None``);
    ``None`` when the task has no such entry."""
    import json

    path = Path(db.task_dir(task)) / "sources.json"
    if not path.is_file():
        return None
    entries = json.loads(path.read_text(encoding="utf-8"))
    m = _PROVENANCE.match(str(entries[int(index)]))
    if m is None:
        return None
    return {"corruption": m.group(1), "severity": int(m.group(2)), "seed": int(m.group(3)),
            "source_task": m.group(4), "source_index": int(m.group(5)), "source": m.group(6)}


def _provenance(corruption: str, severity: int, seed: int, task: str, index: int, source: str | None) -> str:
    text = f"shift corruption={corruption} severity={severity} seed={seed} task={task} index={index}"
    return f"{text} | {source}" if source else text


def _source_entries(db: Any, task: str, n: int) -> list[str | None]:
    import json

    path = Path(db.task_dir(task)) / "sources.json"
    if not path.is_file():
        return [None] * n
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        entries = None
    if not isinstance(entries, list) or len(entries) != n:  # `data validate` reports it; provenance goes on
        return [None] * n
    return [str(e) if e else None for e in entries]


def _value_range(db: Any, task: str, test: np.ndarray) -> tuple[float, float]:
    """Range of the source's test images (as ``db.image`` returns them): shifted images are
    clipped to it, as the windowing that produced the stored images would clip a shifted scan."""
    lo, hi = np.inf, -np.inf
    for i in test:
        image = db.image(task, int(i))
        lo, hi = min(lo, float(np.min(image))), max(hi, float(np.max(image)))
    return lo, hi


def make_shift_database(database: str | Path, tasks: Sequence[str], out: str | Path,
                        corruptions: Sequence[str] | None = None, severities: Sequence[int] = (1, 3, 5), *,
                        seed: int = 0, scanner: str | None = None, overwrite: bool = False,
                        test_samples: int | None = None, progress: Callable[[int, int], Any] | None = None) -> Any:
    """Write database ``out`` holding, per source task, ``T__none_s0`` and ``T__<c>_s<s>`` for every
    corruption and severity (module docstring). The draws of a test sample depend on
    ``(seed, corruption, "T/index")`` only, so the same seed gives the same bytes and the
    severities of a sample are the same field or noise at growing strength.

    Args:
        database: source database folder.
        tasks: source tasks (``database.yaml`` entries of any kind stored in ``images.npy``).
        out: new database folder (written atomically).
        corruptions: names, each fitting every task; ``None``: every corruption fitting each task.
        severities: 1..5.
        seed: seed of every draw.
        scanner: ``ct`` or ``mr`` for tomographic tasks that do not say which they are.
        overwrite: replace an existing ``out``.
        test_samples: keep only the first N samples of each split (in split order; train and
            val unshifted, so the copy still validates): every shifted task then holds at most
            3 N samples, the provenance names each one's source index, and the test pixels are
            those of the full suite. For large sources, where copying every split for every
            condition would cost gigabytes.
        progress: ``(done, total)`` callback, counted in samples written.

    Returns:
        The opened new database.

    Raises:
        ConfigError: unknown or unfitting corruption, bad severity, no task, ``out`` = ``database``.
        DataError: unknown task, a self-described (3D volume) task, a task without test samples,
            ``out`` exists without ``overwrite``.
    """
    from ..data.database import DatabaseWriter, MultiTaskDatabase
    from ..tasks import get_kind, stored_task_kinds

    if not tasks:
        raise ConfigError("--task: name at least one task of the source database")
    severities = [int(s) for s in severities]
    if not severities or any(s not in SEVERITIES for s in severities):
        raise ConfigError(f"--severities: expected integers 1..5, got {list(severities)}")
    if test_samples is not None and (isinstance(test_samples, bool) or int(test_samples) < 1):
        raise ConfigError(f"--test-samples: expected an integer >= 1, got {test_samples!r}")
    if Path(out).resolve() == Path(database).resolve():
        raise ConfigError(f"--out: must be a new folder, not the source database {database}")
    volumes = stored_task_kinds(database)
    for task in tasks:
        if task in volumes:
            raise DataError(f"task {task!r} is a {volumes[task].name} task stored as whole volumes; shift its NIfTI "
                            "folder with `medfoundry shift make-volumes` instead", path=database)
    db = MultiTaskDatabase.open(database)
    plans = []
    for task in dict.fromkeys(tasks):
        spec = db.task(task)
        names = valid_corruptions(spec, scanner) if corruptions is None else list(corruptions)
        check_corruptions(spec, names, scanner)
        test = db.split_indices(task, "test")
        if len(test) == 0:
            raise DataError(f"task {task!r} has no test samples to shift", path=db.task_dir(task) / "splits.json")
        conditions = [(IN_DISTRIBUTION, 0)] + [(c, s) for c in names for s in severities]
        plans.append((spec, test, conditions))
    if scanner is not None and not any(str(getattr(spec.modality, "value", spec.modality)) == "tomographic"
                                       for spec, _, _ in plans):
        raise ConfigError(f"--scanner applies to tomographic tasks only; none of {', '.join(tasks)} is tomographic")
    def kept(spec: Any, test: np.ndarray) -> np.ndarray:
        """Source indices written, in the order of the new task's samples (train, val, test with ``test_samples``)."""
        if test_samples is None:
            return np.arange(db.num_samples(spec.name))
        return np.concatenate([np.asarray(db.split_indices(spec.name, split))[:int(test_samples)]
                               for split in ("train", "val", "test")]).astype(np.int64)

    total = sum(len(kept(spec, test)) * len(conditions) for spec, test, conditions in plans)
    done = 0
    description = f"Shifted test splits of {db.name} ({', '.join(spec.name for spec, _, _ in plans)}), seed {seed}"
    extra = {"shift": {"source_database": str(database), "source_name": db.name, "seed": int(seed),
                       "tasks": [spec.name for spec, _, _ in plans], "severities": severities,
                       "test_samples": test_samples}}
    with DatabaseWriter(out, name=f"{db.name}-shift", description=description, overwrite=overwrite,
                        extra=extra) as writer:
        for spec, test, conditions in plans:
            task, n = spec.name, db.num_samples(spec.name)
            kind = get_kind(spec.kind)
            images = db.array(task, "images")
            spacing = db.array(task, "spacing", required=False)
            sources = _source_entries(db, task, n)
            order = kept(spec, test)
            if test_samples is None:
                splits = {k: v.tolist() for k, v in db.splits(task).items()}
            else:  # the first N of each split, so the copy still validates; only test is shifted
                sizes = [min(int(test_samples), len(db.split_indices(task, split))) for split in ("train", "val")]
                splits = {"train": list(range(sizes[0])), "val": list(range(sizes[0], sum(sizes))),
                          "test": list(range(sum(sizes), len(order)))}
            is_test = np.zeros(n, bool)
            is_test[test] = True
            lo, hi = _value_range(db, task, test)
            for corruption, severity in conditions:
                shift = {"source_database": str(database), "source_task": task, "corruption": corruption,
                         "severity": severity, "seed": int(seed)}
                new = type(spec).from_dict({**spec.to_dict(), "name": shifted_task_name(task, corruption, severity),
                                            "description": f"{spec.description} [shift: {corruption} severity "
                                                           f"{severity}, seed {seed}, test split]".strip(),
                                            "extra": {**(spec.extra or {}), "shift": shift}})
                tw = writer.add_task(new, len(order), image_dtype=str(images.dtype))
                for j, i in enumerate(order.tolist()):
                    shifted = bool(is_test[i]) and corruption != IN_DISTRIBUTION
                    if shifted:
                        image = np.clip(corrupt(db.image(task, i), corruption, severity, seed=seed,
                                                case=f"{task}/{i}"), lo, hi)
                    else:  # stored bytes as they are: the copy is exact, whatever the dtype
                        image = np.asarray(images[i])
                    tw.set_sample(j, image, kind.target(db, task, i),
                                  spacing=None if spacing is None else spacing[i],
                                  source=_provenance(corruption if is_test[i] else IN_DISTRIBUTION,
                                                     severity if is_test[i] else 0, seed, task, i, sources[i]))
                    done += 1
                    if progress is not None and (done % 64 == 0 or done == total):
                        progress(done, total)
                tw.set_splits(splits)
    return MultiTaskDatabase.open(out)
