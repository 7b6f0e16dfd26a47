"""Config, task sampling, sharded streams, schedule, and the round's arithmetic and memory."""

from __future__ import annotations

import math
import weakref

import numpy as np
import pytest
import torch

from medfoundry.data.loading import BatchStream, TaskDataset
from medfoundry.errors import ConfigError
from medfoundry.training import MultiTaskTrainer, NaiveJointTrainer, PretrainConfig, TaskSampler, WarmupCosine
from medfoundry.training.sampling import ShardedBatchStream
from training_standin import StandInModel


def _model(db, tasks, seed=0):
    torch.manual_seed(seed)
    return StandInModel([db.task(t) for t in tasks])


# ----------------------------------------------------------------- config
def test_config_yaml_roundtrip_and_overrides(tmp_path):
    cfg = PretrainConfig(rounds=7, tasks=["a", "b"], sampling="random_k", tasks_per_round=1, betas=(0.8, 0.9))
    cfg.save(tmp_path / "c.yaml")
    back = PretrainConfig.from_yaml(tmp_path / "c.yaml")
    assert back == cfg
    assert back.betas == (0.8, 0.9)
    over = back.replace(rounds=9, lr=None, tasks="x,y")
    assert over.rounds == 9 and over.lr == cfg.lr and over.tasks == ["x", "y"]
    assert cfg.differences(over) == ["tasks", "rounds"]


def test_config_errors_name_field_and_suggest(tmp_path):
    (tmp_path / "c.yaml").write_text("roundz: 3\n")
    with pytest.raises(ConfigError, match="did you mean rounds"):
        PretrainConfig.from_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="'batch_size'.*>= 1.*0"):
        PretrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="tasks_per_round"):
        PretrainConfig(sampling="random_k")
    with pytest.raises(ConfigError, match="sampling"):
        PretrainConfig(sampling="sometimes")


# ----------------------------------------------------------------- sampling
def test_sampler_policies_and_state():
    tasks = ["a", "b", "c", "d"]
    assert TaskSampler(tasks).select() == tasks
    s = TaskSampler(tasks, "random_k", k=2, seed=3)
    draws = [s.select() for _ in range(5)]
    assert all(len(d) == 2 and len(set(d)) == 2 and d == sorted(d, key=tasks.index) for d in draws)
    state = s.state_dict()
    after = [s.select() for _ in range(5)]
    s2 = TaskSampler(tasks, "random_k", k=2, seed=99)
    s2.load_state_dict(state)
    assert [s2.select() for _ in range(5)] == after
    # size_weighted with k=1: P(task) = size / total, here 1/10, 2/10, 3/10, 4/10.
    w = TaskSampler(tasks, "size_weighted", k=1, sizes={"a": 10, "b": 20, "c": 30, "d": 40}, seed=0)
    counts = {t: 0 for t in tasks}
    for _ in range(4000):
        counts[w.select()[0]] += 1
    for t, p in zip(tasks, (0.1, 0.2, 0.3, 0.4)):
        assert abs(counts[t] / 4000 - p) < 0.03


def test_sharded_streams_partition_the_global_batch(toy_db):
    ds = TaskDataset(toy_db, "toy_cls", "train")  # 14 samples: batches of 6 wrap epochs
    full = BatchStream(ds, 6, seed=5)
    shards = [ShardedBatchStream(ds, 6, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(4):
        whole = full.next_batch()["index"].tolist()
        parts = [s.next_batch()["index"].tolist() for s in shards]
        assert sorted(parts[0] + parts[1]) == sorted(whole)
        assert parts[0] == whole[0::2] and parts[1] == whole[1::2]
    assert shards[0].state_dict() == full.state_dict() == shards[1].state_dict()
    with pytest.raises(ConfigError, match="multiple"):
        ShardedBatchStream(ds, 5, rank=0, world_size=2)


def test_warmup_cosine_values():
    s = WarmupCosine(1.0, total_rounds=12, warmup_rounds=2, min_ratio=0.1)
    assert s(0) == pytest.approx(0.5) and s(1) == pytest.approx(1.0)
    assert s(2) == pytest.approx(1.0)
    assert s(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert s(12) == pytest.approx(0.1) and s(50) == pytest.approx(0.1)


# ----------------------------------------------------------------- the round
def _cfg(**kw):
    base = dict(rounds=3, batch_size=4, warmup_rounds=1, grad_clip=None, device="cpu", progress=False, lr=1e-2,
                tasks=["toy_cls", "toy_multilabel", "toy_seg", "toy_det"])
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_round_equals_joint_loss_step(toy_db, reduction):
    """Per-task backward + one step per round == one backward of the summed losses + one step."""
    cfg = _cfg(loss_reduction=reduction, loss_weights={"toy_seg": 2.0})
    ours, naive = _model(toy_db, cfg.tasks), _model(toy_db, cfg.tasks)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    t1, t2 = MultiTaskTrainer(ours, toy_db, cfg), NaiveJointTrainer(naive, toy_db, cfg)
    for _ in range(cfg.rounds):
        a, b = t1.train_round(), t2.train_round()
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    moved = 0
    for (name, p), q in zip(ours.state_dict().items(), naive.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(p, before[name]))
    assert moved == len(before)  # every trunk and head tensor was updated


def test_loss_weights_reach_the_shared_update(toy_db):
    """Guard for the test above (so it can fail): reweighting one task changes the trunk's step.

    (A factor common to every task, as ``mean`` vs ``sum``, would not: AdamW is invariant to it.)
    """
    tasks = ["toy_cls", "toy_seg"]
    models = []
    for weights in ({}, {"toy_seg": 5.0}):
        model = _model(toy_db, tasks)
        trainer = MultiTaskTrainer(model, toy_db, _cfg(tasks=tasks, loss_weights=weights, weight_decay=0.0))
        trainer.train_round()
        trainer.train_round()
        models.append(model)
    diff = (models[0].encoder[0].weight - models[1].encoder[0].weight).abs().max().item()
    assert diff > 1e-4


def _alive_saved_tensors_probe(model):
    """Records every intermediate tensor autograd saves; reports how many are still alive
    each time a new forward pass begins."""
    saved: list[weakref.ref] = []
    alive_at_forward: list[int] = []

    def pack(t):
        if t.grad_fn is not None:
            saved.append(weakref.ref(t))
        return t

    model.register_forward_pre_hook(lambda m, args: alive_at_forward.append(sum(r() is not None for r in saved)))
    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), saved, alive_at_forward


def test_no_graph_survives_a_task(toy_db):
    cfg = _cfg(rounds=2)
    model = _model(toy_db, cfg.tasks)
    hooks, saved, alive = _alive_saved_tensors_probe(model)
    trainer = MultiTaskTrainer(model, toy_db, cfg)
    with hooks:
        trainer.train_round()
        trainer.train_round()
    assert len(alive) == 8 and len(saved) > 50
    assert alive == [0] * 8  # each task starts with nothing of the previous task's graph alive
    assert all(r() is None for r in saved)

    # The same probe sees the joint-loss baseline keep every earlier task's graph alive.
    model2 = _model(toy_db, cfg.tasks)
    hooks2, _, alive2 = _alive_saved_tensors_probe(model2)
    with hooks2:
        NaiveJointTrainer(model2, toy_db, cfg).train_round()
    assert alive2[0] == 0 and all(b > a for a, b in zip(alive2, alive2[1:]))


def test_random_k_round_only_touches_selected_heads(toy_db):
    cfg = _cfg(sampling="random_k", tasks_per_round=2, rounds=1, weight_decay=0.0)
    model = _model(toy_db, cfg.tasks)
    before = {t: [p.clone() for p in model.heads[t].parameters()] for t in cfg.tasks}
    stats = MultiTaskTrainer(model, toy_db, cfg).train_round()
    assert len(stats["tasks"]) == 2 and set(stats["losses"]) == set(stats["tasks"])
    for t in cfg.tasks:
        changed = any(not torch.equal(a, b) for a, b in zip(before[t], model.heads[t].parameters()))
        assert changed == (t in stats["tasks"]), t


def test_clipping_bounds_the_shared_gradient(toy_db):
    cfg = _cfg(grad_clip=0.01, rounds=1)
    trainer = MultiTaskTrainer(_model(toy_db, cfg.tasks), toy_db, cfg)
    seen = []
    orig = trainer.trunk_opt.step

    def spy(*a, **k):
        seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.trunk_params])).item())
        return orig(*a, **k)

    trainer.trunk_opt.step = spy
    stats = trainer.train_round()
    assert stats["grad_norm"] > 0.01  # the raw norm is reported...
    assert seen[0] == pytest.approx(0.01, rel=1e-4)  # ...and the step used the clipped gradient


def test_unknown_task_and_missing_head(toy_db):
    with pytest.raises(ConfigError, match="did you mean toy_cls"):
        MultiTaskTrainer(_model(toy_db, ["toy_cls"]), toy_db, _cfg(tasks=["toy_clss"]))
    with pytest.raises(ConfigError, match="no head"):
        MultiTaskTrainer(_model(toy_db, ["toy_cls"]), toy_db, _cfg(tasks=["toy_cls", "toy_seg"]))


def test_evaluate_matches_hand_count(toy_db):
    from medfoundry.training import evaluate

    model = _model(toy_db, ["toy_cls"])
    metrics = evaluate(model, toy_db, "val", tasks=["toy_cls"], batch_size=3, chance=True)
    ds = TaskDataset(toy_db, "toy_cls", "val")
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([ds[i]["image"] for i in range(len(ds))])), "toy_cls")
    labels = [ds[i]["target"] for i in range(len(ds))]
    expected = float(np.mean(logits.argmax(1).numpy() == np.array(labels)))
    assert metrics["toy_cls"]["accuracy"] == pytest.approx(expected)
    spec = toy_db.task("toy_cls")
    assert metrics["toy_cls"]["balanced_accuracy_chance"] == pytest.approx(1.0 / spec.num_classes)


def test_loader_threads_do_not_change_the_result(toy_db):
    results = []
    for workers in (0, 2):
        model = _model(toy_db, ["toy_cls", "toy_seg", "toy_det"])
        trainer = MultiTaskTrainer(model, toy_db, _cfg(tasks=["toy_cls", "toy_seg", "toy_det"], num_workers=workers))
        losses = [trainer.train_round()["losses"] for _ in range(3)]
        trainer.close()
        results.append((losses, model.state_dict()))
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        assert torch.equal(value, results[1][1][key]), key


def test_trainer_writes_log_and_checkpoint_and_resumes_in_process(toy_db, tmp_path):
    from medfoundry.training import latest_checkpoint, read_metrics

    tasks = ["toy_cls", "toy_multilabel"]
    cfg = _cfg(tasks=tasks, rounds=4, checkpoint_every=2, eval_every=2)
    first = MultiTaskTrainer(_model(toy_db, tasks), toy_db, cfg, run_dir=tmp_path)
    final = first.fit()
    assert set(final) == set(tasks) and "accuracy" in final["toy_cls"]
    records = list(read_metrics(tmp_path))
    assert [r["round"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["round"] for r in records if r["kind"] == "eval"] == [2, 4]
    assert latest_checkpoint(tmp_path).name == "round_0000004.pt"
    again = MultiTaskTrainer(_model(toy_db, tasks, seed=1), toy_db, cfg, run_dir=tmp_path)
    assert again.resume() and again.round == 4
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_resumed_log_drops_later_and_truncated_lines(tmp_path):
    from medfoundry.training import read_metrics
    from medfoundry.training.logging import RunLogger

    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "round": 1}\n{"kind": "train", "round": 2}\n'
                                            '{"kind": "train", "round": 3}\n{"kind": "tra')
    RunLogger(tmp_path, resume_round=2).log({"kind": "train", "round": 3, "x": 1.0})
    assert [(r["round"], r.get("x")) for r in read_metrics(tmp_path)] == [(1, None), (2, None), (3, 1.0)]
