"""Recipe tuning on the val split: disjoint selection and scoring halves, the test split unread."""

import numpy as np
import pytest

from medfoundry.errors import ConfigError
from medfoundry.transfer import TransferConfig, run_sweep
from medfoundry.transfer.splits import run_splits, val_halves


def test_val_halves_partition_the_val_split_per_stratum(toy_db):
    for task in toy_db.tasks:
        select, score = val_halves(toy_db, task)
        val = toy_db.split_indices(task, "val")
        assert not np.intersect1d(select, score).size
        np.testing.assert_array_equal(np.union1d(select, score), val)
        strata = toy_db.strata(task)
        for s in np.unique(strata[val]):
            n = int((strata[val] == s).sum())
            assert int((strata[score] == s).sum()) == n // 2  # stratified: half of every stratum scores
        again = val_halves(toy_db, task)
        np.testing.assert_array_equal(again[1], score)


def test_val_scoring_never_reads_test_nor_its_own_selection_cases(toy_db):
    cfg = TransferConfig(score_split="val")
    test_cfg = TransferConfig()
    for task in toy_db.tasks:
        select_half, score_half = val_halves(toy_db, task)
        test = toy_db.split_indices(task, "test")
        for fraction in (0.25, 1.0):
            for seed in (0, 1):
                cases = run_splits(toy_db, task, fraction, seed, cfg)
                np.testing.assert_array_equal(cases.score, score_half)
                assert np.isin(cases.select, select_half).all() and len(cases.select) >= 1
                assert not np.intersect1d(cases.score, test).size
                assert not np.intersect1d(cases.score, cases.train).size
                # the test mode keeps the published protocol: scaled val subset, whole test split
                ref = run_splits(toy_db, task, fraction, seed, test_cfg)
                np.testing.assert_array_equal(ref.score, test)
                np.testing.assert_array_equal(ref.select, toy_db.fraction_indices(task, fraction, seed, split="val"))
                np.testing.assert_array_equal(ref.train, cases.train)


def test_score_split_is_validated():
    with pytest.raises(ConfigError, match="score_split"):
        TransferConfig(score_split="train")


def test_a_val_scored_sweep_says_so_and_refuses_to_mix_with_test(toy_db, tmp_path):
    from medfoundry.reports import build_report

    task = next(t for t in toy_db.tasks if toy_db.task(t).kind.value == "classification")
    tiny = dict(fractions=(1.0,), seeds=1, max_epochs=2, min_steps=2, max_steps=3, min_eval_interval=2,
                patience=1, n_boot=10, progress=False, device="cpu", eval_batch_size=16, modes=("frozen",))
    store = run_sweep(toy_db.root, ["random"], tmp_path, tasks=[task], score_split="val", fail_fast=True, **tiny)
    (record,) = store.records
    assert record["status"] == "ok" and record["score_split"] == "val"
    assert record["n_test"] == len(val_halves(toy_db, task)[1])
    page = build_report(tmp_path).read_text()
    assert "scored on the val split" in page and "scoring half of the val split" in page
    with pytest.raises(ConfigError, match="score_split"):
        run_sweep(toy_db.root, ["random"], tmp_path, tasks=[task], fail_fast=True, **tiny)
