"""Images per second of multi-task rounds (MultiTaskTrainer) versus training the very same
batches task by task with a single-task loop (one optimizer step per batch).

    python benchmarks/throughput.py [--tasks 8] [--rounds 6] [--size 64] [--batch-size 16]

Both loops see identical batches (same per-task streams and seeds). Each is timed twice,
alternating, after one untimed warm-up round; the better time of each is kept. Prints one JSON
document with ``ratio = ours / single_task`` (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from memory_scaling import make_benchmark_database  # noqa: E402


class SingleTaskLoop:
    """Baseline: for each batch, forward + backward + one AdamW step on trunk and that head."""

    def __init__(self, model, db, cfg):
        import torch

        from medfoundry.training.multitask import move_to, param_groups
        from medfoundry.training.sampling import ShardedBatchStream, stream_seed
        from medfoundry.data.loading import TaskDataset

        self.model, self.cfg, self.move_to = model, cfg, move_to
        self.device = next(model.parameters()).device
        self.tasks = list(cfg.tasks)
        self.opts = {t: torch.optim.AdamW(param_groups(model.trunk_parameters(), cfg.weight_decay)
                                          + param_groups(model.heads[t].parameters(), cfg.weight_decay), lr=cfg.lr)
                     for t in self.tasks}
        self.streams = {t: ShardedBatchStream(TaskDataset(db, t, "train"), cfg.batch_size,
                                              seed=stream_seed(cfg.seed, t)) for t in self.tasks}

    def train_round(self) -> int:
        images = 0
        self.model.train()
        for t in self.tasks:
            batch = self.streams[t].next_batch()
            image = batch["image"].to(self.device)
            loss = self.model.heads[t].loss(self.model(image, t), self.move_to(batch["target"], self.device))
            loss.backward()
            opt = self.opts[t]
            opt.step()
            opt.zero_grad(set_to_none=True)
            images += image.shape[0]
        return images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--encoder", default="resnet_small")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from medfoundry.training import MultiTaskTrainer, PretrainConfig, build_model

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        db = make_benchmark_database(Path(tmp) / "db", args.tasks, size=args.size)
        tasks = db.task_names()
        cfg = PretrainConfig(tasks=tasks, batch_size=args.batch_size, rounds=1000, warmup_rounds=0, progress=False,
                             device="cuda" if cuda else "cpu", encoder=args.encoder, grad_clip=None)
        specs = [db.task(t) for t in tasks]
        torch.manual_seed(0)
        ours = MultiTaskTrainer(build_model(specs, cfg), db, cfg)
        torch.manual_seed(0)
        model = build_model(specs, cfg).to(ours.device)
        single = SingleTaskLoop(model, db, cfg)

        def timed(step) -> tuple[float, int]:
            if cuda:
                torch.cuda.synchronize()
            start, images = time.perf_counter(), 0
            for _ in range(args.rounds):
                out = step()
                images += out["images"] if isinstance(out, dict) else out
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start, images

        ours.train_round()
        single.train_round()
        best = {"ours": float("inf"), "single_task": float("inf")}
        images = {}
        for _ in range(2):
            for name, step in (("ours", ours.train_round), ("single_task", single.train_round)):
                seconds, n = timed(step)
                best[name] = min(best[name], seconds)
                images[name] = n
    rate = {k: images[k] / best[k] for k in best}
    print(json.dumps({"config": {"tasks": args.tasks, "rounds": args.rounds, "size": args.size,
                                 "batch_size": args.batch_size, "encoder": args.encoder, "threads": args.threads,
                                 "device": "cuda" if cuda else "cpu"},
                      "images_per_second": {k: round(v, 2) for k, v in rate.items()},
                      "ratio": round(rate["ours"] / rate["single_task"], 3)}, indent=2))


if __name__ == "__main__":
    main()
