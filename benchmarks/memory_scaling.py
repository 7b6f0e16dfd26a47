"""Peak memory of one training round versus the number of tasks T, for the memory-decoupled
MultiTaskTrainer and the naive joint-loss trainer, on the same synthetic tasks and batches.

Every (trainer, T) runs in a fresh subprocess. With a GPU the figure is
``torch.cuda.max_memory_allocated`` over the measured rounds; on CPU it is the peak resident
set size (VmHWM) of that process. Both are also given as the rise over the memory in use once
the model is built, before the first round (the CPU peak is reset there via
``/proc/self/clear_refs``), which removes the ~0.5 GB of PyTorch libraries from the ratio.
On CPU ``anon_rise`` (RssAnon polled every 2 ms) leaves out the memory-mapped database pages;
it still holds the inactive heads and their AdamW state, which on a GPU stay in host memory.

    python benchmarks/memory_scaling.py [--tasks 1 2 4 8 16 32] [--size 64] [--batch-size 16]

Prints one JSON document; ratios are against T = 1 of the same trainer. Goal: ours at T = 32
within 1.15x of T = 1, the naive trainer growing about linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_benchmark_database(root: str | Path, num_tasks: int, size: int = 64, n: int = 48, seed: int = 0):
    """``num_tasks`` tasks with the same batch shape (1 x size x size): even tasks segment a
    bright disc, odd ones classify which quadrant holds it (4 classes)."""
    from medfoundry.data.database import DatabaseWriter, MultiTaskDatabase
    from medfoundry.data.tasks import TaskSpec

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    with DatabaseWriter(root, name="memory_bench", overwrite=True) as writer:
        for t in range(num_tasks):
            seg = t % 2 == 0
            spec = TaskSpec(f"bench_{t:02d}", "segmentation" if seg else "classification",
                            ("background", "disc") if seg else ("tl", "tr", "bl", "br"), "tomographic", 2,
                            (size, size), 1)
            tw = writer.add_task(spec, n=n, image_dtype="float16")
            for i in range(n):
                q = int(rng.integers(0, 4))
                cy = (q // 2) * size // 2 + size // 4 + int(rng.integers(-3, 4))
                cx = (q % 2) * size // 2 + size // 4 + int(rng.integers(-3, 4))
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2
                img = 0.2 * rng.random((1, size, size)) + 0.8 * disc[None]
                tw.set_sample(i, img.astype(np.float32), disc.astype(np.uint8) if seg else q)
            tw.set_splits({"train": range(n - 8), "val": range(n - 8, n - 4), "test": range(n - 4, n)})
    return MultiTaskDatabase.open(root)


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from medfoundry.data.database import MultiTaskDatabase
    from medfoundry.training import MultiTaskTrainer, NaiveJointTrainer, PretrainConfig, build_model

    db = MultiTaskDatabase.open(args.db)
    tasks = db.task_names()[: args.num_tasks]
    cuda = torch.cuda.is_available()
    cfg = PretrainConfig(tasks=tasks, batch_size=args.batch_size, rounds=100, warmup_rounds=0, progress=False,
                         device="cuda" if cuda else "cpu", encoder=args.encoder, precision="fp32")
    torch.manual_seed(0)
    model = build_model([db.task(t) for t in tasks], cfg)
    trainer = (MultiTaskTrainer if args.trainer == "ours" else NaiveJointTrainer)(model, db, cfg)
    # Reference point: the built model and data, before any round (so the rise covers
    # gradients, optimizer state and activations: what training adds).
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _vm("VmRSS")
        anon_before = _vm("RssAnon")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        poller = _AnonPeak()
    trainer.train_round()  # warm-up round, measured too: optimizer state appears here
    start = time.perf_counter()
    for _ in range(args.rounds):
        trainer.train_round()
    seconds = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        kind = "cuda_max_allocated"
    else:
        peak = _vm("VmHWM")
        kind = "cpu_peak_rss"
    record = {"trainer": args.trainer, "tasks": len(tasks), "measure": kind, "peak_mb": peak / 2**20,
              "before_mb": before / 2**20, "rise_mb": (peak - before) / 2**20,
              "seconds_per_round": seconds / args.rounds}
    if not cuda:
        record["anon_rise_mb"] = (poller.stop() - anon_before) / 2**20
    print(json.dumps(record))


class _AnonPeak:
    """Polls RssAnon (heap: tensors, optimizer state) every 2 ms; VmHWM also counts the
    memory-mapped database pages read, which grow with the number of tasks touched."""

    def __init__(self) -> None:
        import threading

        self.peak = _vm("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _vm("RssAnon"))
            self._stop.wait(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _vm("RssAnon"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--trainers", nargs="+", default=["ours", "naive"], choices=["ours", "naive"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="rounds measured after the first one (which is measured too)")
    p.add_argument("--encoder", default="resnet_small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trainer", help=argparse.SUPPRESS)
    p.add_argument("--num-tasks", type=int, help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        make_benchmark_database(db, max(args.tasks), size=args.size)
        for trainer in args.trainers:
            for t in args.tasks:
                cmd = [sys.executable, __file__, "--child", "--trainer", trainer, "--num-tasks", str(t), "--db", str(db),
                       "--batch-size", str(args.batch_size), "--rounds", str(args.rounds), "--encoder", args.encoder,
                       "--threads", str(args.threads)]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    sys.exit(f"child {trainer} T={t} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), file=sys.stderr)
    summary: dict[str, dict[str, float]] = {}
    for trainer in args.trainers:
        rows = {r["tasks"]: r for r in results if r["trainer"] == trainer}
        base = rows[min(rows)]
        summary[trainer] = {
            f"T={t}": {"peak_ratio": round(r["peak_mb"] / base["peak_mb"], 3),
                       "rise_ratio": round(r["rise_mb"] / max(base["rise_mb"], 1e-9), 3),
                       **({"anon_rise_ratio": round(r["anon_rise_mb"] / max(base["anon_rise_mb"], 1e-9), 3)}
                          if "anon_rise_mb" in r else {})}
            for t, r in sorted(rows.items())
        }
    print(json.dumps({"config": {"size": args.size, "batch_size": args.batch_size, "encoder": args.encoder,
                                 "measure": results[0]["measure"]},
                      "results": results, "ratios_vs_T1": summary}, indent=2))


if __name__ == "__main__":
    main()
