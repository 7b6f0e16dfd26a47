"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from medfoundry.training import load_checkpoint
from medfoundry.training.checkpoint import checkpoint_path, list_checkpoints

WORKER = str(Path(__file__).parent / "training_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
ROUNDS = 8
# Limits that only catch a hang: on a loaded 2-core machine starting a worker (torch + MONAI)
# alone has taken over a minute, so a tight limit fails runs that are merely slow.
HANG_S = 600


def _run(db, out, sleep=0.0):
    return [sys.executable, WORKER, "pretrain", str(db), str(out), str(ROUNDS), str(sleep)]


def _train_lines(run):
    lines = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [(r["round"], r["losses"], r["lr"]) for r in lines if r["kind"] == "train"]


def test_sigkill_then_resume_is_bit_identical(toy_db, tmp_path):
    db = toy_db.root
    full, broken = tmp_path / "full", tmp_path / "broken"
    # The reference runs in this process (1 thread, like the worker): same arithmetic.
    from training_worker import run_pretrain

    run_pretrain(str(db), str(full), ROUNDS, 0.0)

    # 0.5 s per round leaves the parent 2 s after checkpoint 4 to kill before round 8, even
    # when its polling is starved by other processes.
    proc = subprocess.Popen(_run(db, broken, sleep=0.5), env=ENV)
    target = checkpoint_path(broken, 4)
    deadline = time.monotonic() + HANG_S
    while not target.exists():
        assert proc.poll() is None, "worker ended before writing the checkpoint of round 4"
        assert time.monotonic() < deadline, f"no checkpoint of round 4 within {HANG_S} s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = [r for r, _ in list_checkpoints(broken)]
    assert max(done) < ROUNDS, "the run finished before it was killed; the test proved nothing"
    assert not (broken / "model").exists()

    subprocess.run(_run(db, broken), env=ENV, check=True, timeout=HANG_S)  # resumes from round 4 (or 6)

    a = load_checkpoint(checkpoint_path(full, ROUNDS))
    b = load_checkpoint(checkpoint_path(broken, ROUNDS))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for ta, tb in zip(a["trunk_optimizer"]["state"].values(), b["trunk_optimizer"]["state"].values()):
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert a["streams"] == b["streams"] and a["sampler"] == b["sampler"]
    # The log of the resumed run holds each round once, with the same losses as the full run.
    assert _train_lines(full) == _train_lines(broken)
    assert [r for r, _, _ in _train_lines(broken)] == list(range(1, ROUNDS + 1))
    assert (broken / "model" / "standin.pt").is_file()
    assert json.loads((broken / "final_metrics.json").read_text()) == json.loads((full / "final_metrics.json").read_text())
