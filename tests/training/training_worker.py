"""Subprocess worker for the resume and distributed tests (not a test module).

Usage:
    python training_worker.py pretrain DB OUT ROUNDS SLEEP   # pretrain() with the stand-in model
    python training_worker.py rounds DB OUT.pt ROUNDS        # trainer rounds; rank 0 saves weights
The second form joins a process group when torchrun-style variables (WORLD_SIZE, RANK, ...) are set.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

from training_standin import StandInModel, standin_factory  # noqa: E402

from medfoundry.data.database import MultiTaskDatabase  # noqa: E402
from medfoundry.training import MultiTaskTrainer, PretrainConfig, init_distributed, pretrain  # noqa: E402
from medfoundry.training import multitask  # noqa: E402
from medfoundry.training.distributed import shutdown  # noqa: E402


def run_pretrain(db: str, out: str, rounds: int, sleep: float) -> None:
    if sleep > 0:  # slow rounds down so the parent can kill us between two checkpoints
        original = multitask.MultiTaskTrainer.train_round

        def slow(self):
            time.sleep(sleep)
            return original(self)

        multitask.MultiTaskTrainer.train_round = slow
    cfg = PretrainConfig(database=db, out=out, rounds=rounds, batch_size=4, checkpoint_every=2, warmup_rounds=2,
                         sampling="random_k", tasks_per_round=3, device="cpu", progress=False, seed=7)
    pretrain(cfg, model_factory=standin_factory)


def run_rounds(db_path: str, out: str, rounds: int) -> None:
    db = MultiTaskDatabase.open(db_path)
    tasks = ["toy_cls", "toy_multilabel", "toy_seg", "toy_det"]
    cfg = PretrainConfig(tasks=tasks, rounds=rounds, batch_size=8, warmup_rounds=1, grad_clip=0.5, device="cpu",
                         progress=False, lr=1e-2, seed=3)
    ctx = init_distributed(torch.device("cpu"))
    torch.manual_seed(ctx.rank)  # different init per rank: the broadcast from rank 0 must fix it
    model = StandInModel([db.task(t) for t in tasks])
    trainer = MultiTaskTrainer(model, db, cfg, dist=ctx)
    for _ in range(rounds):
        trainer.train_round()
    if ctx.is_main:
        torch.save(model.state_dict(), out)
    shutdown(ctx)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "pretrain":
        run_pretrain(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        run_rounds(sys.argv[2], sys.argv[3], int(sys.argv[4]))
