"""A database larger than the memory it may use still trains: peak RSS versus database size.

Builds one classification task of ``--gb`` GiB on disk (float16 images, written through
``DatabaseWriter``), then, in a fresh subprocess, reads every sample once through
``TaskDataset``, and in another one runs ``validate_database`` over it; reports memory as JSON:

* ``peak_rss_anon_mb``: the process's private memory (heap, Python objects, the current
  sample): what memory-mapping is meant to keep flat;
* ``peak_rss_file_mb``: file pages of the mapped arrays counted in RSS; the kernel reclaims
  them under pressure, so they look like "used" memory only when nothing else needs it;
* ``cgroup_peak_mb`` / ``limit_mb``: with ``--limit-mb`` (Linux, root, cgroup v1 or v2) both
  stages run inside a memory cgroup with that hard limit, so a run that completes with a
  database larger than the limit is the proof; the cgroup is removed afterwards.

Usage::

    python benchmarks/database_memory.py --gb 1.5 --limit-mb 512 --out /tmp/mf_dbmem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 256  # image side; float16 -> 128 KiB per sample


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])  # kB
    return out


def build(root: Path, gb: float) -> None:
    from medfoundry.data import DatabaseWriter, TaskSpec

    n = int(np.ceil(gb * 2**30 / (SIZE * SIZE * 2)))
    spec = TaskSpec("big", "classification", ("a", "b"), "x-ray", 2, (SIZE, SIZE), 1)
    rng = np.random.default_rng(0)
    base = rng.random((SIZE, SIZE), dtype=np.float32)
    with DatabaseWriter(root, name="memory_benchmark", overwrite=True) as writer:
        tw = writer.add_task(spec, n=n, image_dtype="float16")
        for i in range(n):
            tw.set_sample(i, np.roll(base, i, axis=1)[None], i % 2)  # distinct, cheap to make
        tw.set_splits({"train": range(n), "val": [], "test": []})


def iterate(root: Path) -> dict[str, float]:
    from medfoundry.data import MultiTaskDatabase
    from medfoundry.data.loading import TaskDataset

    db = MultiTaskDatabase.open(root)
    ds = TaskDataset(db, "big", "train")
    base = _status()  # after importing torch/numpy and opening the database
    peak_anon = peak_file = 0
    checksum = 0.0
    t0 = time.perf_counter()
    for k in range(len(ds)):
        item = ds[k]
        checksum += float(item["image"][0, 0, k % SIZE])
        if k % 256 == 0:
            s = _status()
            peak_anon, peak_file = max(peak_anon, s["RssAnon"]), max(peak_file, s["RssFile"])
    s = _status()
    return {"samples": len(ds), "seconds": time.perf_counter() - t0, "checksum": checksum,
            "peak_rss_anon_mb": max(peak_anon, s["RssAnon"]) / 1024,
            "peak_rss_file_mb": max(peak_file, s["RssFile"]) / 1024,
            "vm_hwm_mb": s["VmHWM"] / 1024, "baseline_rss_anon_mb": base["RssAnon"] / 1024,
            "baseline_rss_file_mb": base["RssFile"] / 1024,
            "growth_rss_anon_mb": (max(peak_anon, s["RssAnon"]) - base["RssAnon"]) / 1024}


def validate(root: Path) -> dict[str, float]:
    from medfoundry.data.validate import validate_database

    base = _status()
    t0 = time.perf_counter()
    problems = validate_database(root)
    s = _status()
    return {"validate_seconds": time.perf_counter() - t0, "validate_problems": len(problems),
            "validate_growth_rss_anon_mb": (s["RssAnon"] - base["RssAnon"]) / 1024,
            "validate_vm_hwm_mb": s["VmHWM"] / 1024}


class MemoryCgroup:
    """A temporary memory cgroup (v2 or v1) with a hard limit; ``None``-safe when unavailable."""

    def __init__(self, limit_mb: int):
        self.limit = limit_mb * 2**20
        self.path: Path | None = None
        self.version = 0
        name = f"medfoundry_dbmem_{os.getpid()}"
        v2, v1 = Path("/sys/fs/cgroup/cgroup.controllers"), Path("/sys/fs/cgroup/memory")
        try:
            if v2.is_file():
                self.path, self.version = Path("/sys/fs/cgroup") / name, 2
                self.path.mkdir()
                (self.path / "memory.max").write_text(str(self.limit))
                (self.path / "memory.swap.max").write_text("0")
            elif v1.is_dir():
                self.path, self.version = v1 / name, 1
                self.path.mkdir()
                (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
            else:
                raise OSError("no cgroup memory controller")
        except OSError as err:
            self.error = str(err)
            self.remove()
            self.path = None
        else:
            self.error = ""

    def enter(self) -> None:  # runs in the child before exec
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_mb(self) -> float | None:
        if self.path is None:
            return None
        f = self.path / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(f.read_text()) / 2**20 if f.is_file() else None

    def oom_kills(self) -> int | None:
        if self.path is None:
            return None
        if self.version == 2:
            events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
            return int(events.get("oom_kill", 0))
        return int((self.path / "memory.failcnt").read_text())  # v1: times the limit was hit

    def remove(self) -> None:
        if self.path is not None and self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.5, help="database size in GiB")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medfoundry_dbmem"), help="scratch folder (deleted)")
    ap.add_argument("--limit-mb", type=int, default=0, help="run both stages under this hard memory limit")
    ap.add_argument("--stage", choices=["build", "iterate", "validate"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    root = args.out / "db"
    if args.stage == "build":
        build(root, args.gb)
        return
    if args.stage in ("iterate", "validate"):
        print(json.dumps(iterate(root) if args.stage == "iterate" else validate(root)))
        return

    group = MemoryCgroup(args.limit_mb) if args.limit_mb else None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--gb", str(args.gb), "--out", str(args.out)]
    pre = group.enter if group is not None and group.path is not None else None
    try:
        t0 = time.perf_counter()
        subprocess.run(cmd + ["--stage", "build"], check=True, env=env, preexec_fn=pre)
        build_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        run = subprocess.run(cmd + ["--stage", "iterate"], check=True, env=env, preexec_fn=pre,
                             capture_output=True, text=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        run = subprocess.run(cmd + ["--stage", "validate"], check=True, env=env, preexec_fn=pre,
                             capture_output=True, text=True)
        result.update(json.loads(run.stdout.strip().splitlines()[-1]))
        db_mb = size / 2**20
        result.update({
            "database_mb": db_mb, "build_seconds": build_s,
            "ratio_anon_to_db": result["peak_rss_anon_mb"] / db_mb,
            "ratio_anon_growth_to_db": result["growth_rss_anon_mb"] / db_mb,
            "ratio_hwm_to_db": result["vm_hwm_mb"] / db_mb,
            "limit_mb": args.limit_mb if group is not None and group.path is not None else None,
            "cgroup_peak_mb": group.peak_mb() if group else None,
            "cgroup_limit_hits": group.oom_kills() if group else None,
            "cgroup_error": group.error if group else None,
        })
        print(json.dumps(result, indent=2))
    finally:
        if group is not None:
            group.remove()
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
