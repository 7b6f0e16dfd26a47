"""Early stopping of medfoundry.transfer.loop.fit on a scripted validation sequence."""

import dataclasses

import pytest
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.transfer import TransferConfig
from medfoundry.transfer.loop import fit, step_budget


def test_step_budget():
    cfg = TransferConfig(batch_size=8, max_epochs=3, min_steps=5, max_steps=20, min_eval_interval=2)
    # 100 samples: 13 steps per epoch x 3 = 39 -> capped at 20; validate every epoch (13)
    assert step_budget(100, cfg) == (8, 20, 13)
    # 3 samples: batch 3, 1 step per epoch x 3 = 3 -> raised to 5; validate every 2 steps
    assert step_budget(3, cfg) == (3, 5, 2)


def test_early_stopping_restores_best_weights():
    cfg = TransferConfig(batch_size=2, max_epochs=100, min_steps=1, max_steps=100, eval_every=1, patience=2)
    lin = nn.Linear(1, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    scores = iter([0.1, 0.5, 0.3, 0.4, 0.9, 0.95])
    weights = []

    def train_step(batch):
        return (lin(torch.ones(len(batch), 1)) - 5.0).pow(2).mean()

    def validate():
        weights.append(lin.weight.item())
        return next(scores), 0.0

    res = fit([lin], opt, train_step, validate, n_train=4, cfg=cfg, seed=0)
    # best 0.5 at step 2; steps 3 and 4 do not improve -> stop at step 4 with step 2's weights
    assert res.best_step == 2 and res.steps == 4 and res.val_primary == 0.5
    assert lin.weight.item() == pytest.approx(weights[1])


def test_nan_metric_falls_back_to_loss():
    cfg = TransferConfig(batch_size=1, max_epochs=100, min_steps=1, max_steps=3, eval_every=1, patience=5)
    lin = nn.Linear(1, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.0)
    vals = iter([(float("nan"), 2.0), (float("nan"), 1.0), (float("nan"), 3.0)])
    res = fit([lin], opt, lambda b: lin(torch.ones(1, 1)).sum(), lambda: next(vals), 1, cfg, seed=0)
    assert res.best_step == 2 and res.val_loss == 1.0


def test_config_validation():
    with pytest.raises(ConfigError, match="fractions"):
        TransferConfig(fractions=(0.0, 0.5))
    with pytest.raises(ConfigError, match="mode"):
        TransferConfig(modes=("frozen", "linear"))
    assert TransferConfig(fractions="1,0.1").fractions == (0.1, 1.0)


def test_finetune_step_cap():
    cfg = TransferConfig(max_steps=300, min_steps=30, finetune_max_steps=20)
    assert cfg.for_run("frozen").max_steps == 300
    ft = cfg.for_run("finetune")
    assert (ft.max_steps, ft.min_steps) == (20, 20)
    # the random-init 100 % reference keeps the full budget unless told otherwise
    assert cfg.for_run("finetune", reference=True).max_steps == 300
    assert cfg.replace(reference_full_budget=False).for_run("finetune", reference=True).max_steps == 20


def test_random_init_fine_tunes_its_encoder_at_the_scratch_ratio():
    cfg = TransferConfig(encoder_lr_ratio=0.1, finetune_max_steps=20, max_steps=300)
    assert cfg.for_run("finetune").encoder_lr_ratio == 0.1
    scratch = cfg.for_run("finetune", reference=True, scratch=True)
    assert (scratch.encoder_lr_ratio, scratch.max_steps) == (1.0, 300)
    assert cfg.for_run("finetune", scratch=True).max_steps == 20
    assert cfg.for_run("frozen", scratch=True).encoder_lr_ratio == 0.1  # frozen encoders do not train
    same = dataclasses.replace(cfg, scratch_encoder_lr_ratio=None)  # None: the pretrained encoders' ratio
    assert same.for_run("finetune", scratch=True).encoder_lr_ratio == 0.1
    with pytest.raises(ConfigError, match="scratch_encoder_lr_ratio"):
        TransferConfig(scratch_encoder_lr_ratio=-1.0)


def test_sweep_records_the_learning_rates_each_encoder_fine_tuned_with(toy_db, tmp_path):
    from medfoundry.transfer import run_sweep

    task = next(t for t in toy_db.tasks if toy_db.task(t).kind.value == "classification")
    cfg = TransferConfig(fractions=(1.0,), seeds=1, modes=("finetune",), max_steps=2, min_steps=2, n_boot=5,
                         device="cpu", progress=False, scratch_encoder_lr_ratio=0.5, goal_fractions=False)
    store = run_sweep(toy_db.root, ["random", "stats=classical"], tmp_path / "sweep", tasks=[task], config=cfg,
                      baseline=False)
    ratios = {r["encoder"]: r.get("encoder_lr_ratio") for r in store.records if r["mode"] == "finetune"}
    assert ratios == {"random": 0.5}  # the classical encoder has no fine-tuning runs


def test_goal_fractions_added_by_role():
    from medfoundry.transfer import parse_encoder, plan_runs
    from medfoundry.transfer.efficiency import reference_only_tasks

    cfg = TransferConfig(fractions=(0.1,), seeds=1, modes=("frozen",))
    src = [parse_encoder("random")]
    roles = {"a": "in-domain", "b": "out-of-domain", "c": None}
    plan = plan_runs(["a", "b", "c"], src, cfg, roles=roles)
    got = {(t, m): sorted(f for tt, _, mm, _, f in plan if tt == t and mm == m) for t, _, m, _, _ in plan}
    assert got[("a", "frozen")] == [0.01, 0.1, 1.0]
    assert got[("b", "frozen")] == [0.1, 0.5, 1.0]
    # frozen only: random init is fine-tuned just for the 100 % reference, where a goal needs it
    assert got[("a", "finetune")] == [1.0] and got[("b", "finetune")] == [1.0]
    assert got[("c", "frozen")] == [0.1] and ("c", "finetune") not in got
    assert reference_only_tasks(["a", "b", "c"], cfg, roles) == ["a", "b"]
    plain = plan_runs(["a"], src, cfg.replace(goal_fractions=False), roles=roles)
    assert sorted({p[4] for p in plain}) == [0.1] and {p[2] for p in plain} == {"frozen"}
    both = plan_runs(["a"], src, cfg.replace(modes=("frozen", "finetune")), roles=roles)
    assert sorted(f for _, _, m, _, f in both if m == "finetune") == [0.01, 0.1, 1.0]
    assert reference_only_tasks(["a"], cfg.replace(modes=("frozen", "finetune")), roles) == []


def _constant_fit(scores, cfg, n_train=4):
    lin = nn.Linear(1, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    it = iter(scores)
    return fit([lin], opt, lambda b: (lin(torch.ones(len(b), 1)) - 1.0).pow(2).mean(), lambda: (next(it), 0.0),
               n_train, cfg, seed=0)


def test_plateau_stops_early_and_counts_as_converged():
    cfg = TransferConfig(batch_size=2, max_epochs=100, min_steps=1, max_steps=100, eval_every=1, patience=3)
    res = _constant_fit([0.2, 0.6] + [0.6] * 50, cfg)
    # 0.6 first at step 2, then 3 evaluations without improvement: stop at step 5
    assert (res.steps, res.best_step, res.stop_reason, res.converged) == (5, 2, "plateau", True)
    assert res.budget_steps == 100 and res.convergence()["convergence_note"] is None


def test_cap_and_epoch_budget_are_flagged_not_converged():
    rising = [i / 100 for i in range(200)]
    # 4 samples, batch 2: 2 steps per epoch; 100 epochs = 200 steps > max_steps 10 -> the cap ends it
    capped = _constant_fit(rising, TransferConfig(batch_size=2, max_epochs=100, min_steps=1, max_steps=10,
                                                  eval_every=1, patience=3))
    assert (capped.steps, capped.stop_reason, capped.converged) == (10, "cap", False)
    assert capped.convergence() == {"budget_steps": 10, "stop_reason": "cap", "converged": False,
                                    "convergence_note": "may not have converged"}
    # 3 epochs = 6 steps < max_steps: the epoch budget ends a still-improving run
    short = _constant_fit(rising, TransferConfig(batch_size=2, max_epochs=3, min_steps=1, max_steps=100,
                                                 eval_every=1, patience=3))
    assert (short.steps, short.stop_reason, short.converged) == (6, "epochs", False)


def test_budget_scales_with_training_set_size():
    cfg = TransferConfig()
    small, large = step_budget(216, cfg), step_budget(10_000, cfg)
    assert small[1] == cfg.max_epochs * 7 and small[2] == 10  # 7 steps per epoch, eval >= 10 steps
    assert large[1] == cfg.max_steps and large[2] == 313  # capped; eval once per epoch


@pytest.mark.parametrize("task", ["toy_seg", "toy_det"])
def test_augmented_finetune_is_seeded(toy_db, task):
    """Same seed -> the same augmented batches -> the same weights; ``none`` trains on the raw rows."""
    import numpy as np

    from medfoundry.transfer.finetune import run_finetune
    from medfoundry.transfer.loop import TaskData
    from medfoundry.transfer.sources import build_model, parse_encoder

    data = TaskData(toy_db, task)
    rows = np.arange(12)
    cfg = TransferConfig(batch_size=4, max_epochs=1, min_steps=3, max_steps=3, eval_every=3, augment="standard")

    def run(c):
        model = build_model(parse_encoder("random"), data.spec, c, seed=0)
        run_finetune(model, data, rows, rows[:4], rows[:4], c, seed=0, device=torch.device("cpu"))
        return torch.cat([p.detach().flatten() for p in model.trunk.parameters()])

    first, again, plain = run(cfg), run(cfg), run(cfg.replace(augment="none"))
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)


def test_augment_field_is_checked():
    with pytest.raises(ConfigError, match="augment"):
        TransferConfig(augment="strong")
