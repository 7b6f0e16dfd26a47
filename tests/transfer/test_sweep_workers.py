"""The sweep's worker pool: the same records for 1 and 2 worker processes, and resumable."""

import json

import pytest

from medfoundry.errors import ConfigError
from medfoundry.transfer import run_sweep
from medfoundry.transfer.efficiency import _jobs, plan_runs, threads_per_worker
from medfoundry.transfer.results import ResultStore

TINY = dict(fractions=(0.5, 1.0), seeds=2, max_epochs=1, min_steps=2, max_steps=2, min_eval_interval=1,
            patience=1, n_boot=5, progress=False, device="cpu", eval_batch_size=16, goal_fractions=False)


def _comparable(folder):
    """Records without their wall times (the only field that may differ between runs)."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in json.loads((folder / "results.json").read_text())]


def test_one_and_two_workers_give_identical_records_and_resume(toy_db, tmp_path):
    # One test, so the (slow: each imports torch) worker processes start only twice.
    kw = dict(tasks=["toy_cls"], modes=("frozen", "finetune"), fail_fast=True, **TINY)
    run_sweep(toy_db.root, ["random"], tmp_path / "w1", workers=1, **kw)
    run_sweep(toy_db.root, ["random"], tmp_path / "w2", workers=2, **kw)
    one, two = _comparable(tmp_path / "w1"), _comparable(tmp_path / "w2")
    assert len(one) == 2 * 2 * 2 and all(r["status"] == "ok" for r in one)
    assert one == two  # same values, same order
    assert sum(map(sum, one[0]["confusion"])) == one[0]["n_test"] and len(one[0]["classes"]) == len(one[0]["confusion"])
    assert json.loads((tmp_path / "w2" / "versions.json").read_text())["sweep_workers"] == 2
    # resume in the pool: a frozen and a fine-tuning run are missing, exactly those are redone
    store = ResultStore(tmp_path / "w2")
    victims = [next(r["run_id"] for r in store.records if r["mode"] == m) for m in ("frozen", "finetune")]
    store.records = [r for r in store.records if r["run_id"] not in victims]
    store.save()
    new = []
    run_sweep(toy_db.root, ["random"], tmp_path / "w2", workers=2, on_run=new.append, **kw)
    assert sorted(r["run_id"] for r in new) == sorted(victims)
    assert _comparable(tmp_path / "w2") == one


def test_jobs_group_frozen_runs_that_share_features(toy_db):
    from medfoundry.transfer import TransferConfig, parse_encoder

    cfg = TransferConfig().replace(fractions=(0.5, 1.0), seeds=2, modes=("frozen", "finetune"), goal_fractions=False)
    plan = plan_runs(["toy_cls"], [parse_encoder("random", cfg)], cfg)
    jobs = _jobs(plan, set())
    # random init: one feature extraction per seed -> 2 frozen jobs of 2 fractions; 4 fine-tuning jobs
    assert sorted(len(j) for j in jobs) == [1, 1, 1, 1, 2, 2]
    assert sum(len(j) for j in _jobs(plan, {"toy_cls__random__frozen__f0.5__s0"})) == len(plan) - 1


def test_threads_share_the_cores_and_bad_worker_counts_fail():
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(4, cores=2) == 1
    with pytest.raises(ConfigError, match="--workers"):
        run_sweep("nowhere", ["random"], "out", workers=0)
