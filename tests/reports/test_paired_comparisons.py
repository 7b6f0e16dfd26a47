"""Report: paired encoder comparisons (vs random init, multi-task vs single-task) on a toy table."""

import numpy as np
import pytest

from medfoundry.reports import build_report
from medfoundry.reports.html import paired_comparisons, summarise
from medfoundry.transfer.results import ResultStore, run_id

B = 200


def _rec(enc, kind, mode, seed, value, boot, metric="balanced_accuracy"):
    return {"run_id": run_id("t", enc, mode, 1.0, seed), "status": "ok", "task": "t", "kind": "classification",
            "role": "in-domain", "group": "downstream", "encoder": enc, "encoder_kind": kind, "mode": mode,
            "fraction": 1.0, "seed": seed, "primary_metric": metric, "primary": value, "chance": 0.25,
            "metrics": {metric: value}, "bootstrap": None if boot is None else [float(x) for x in boot]}


def _records(metric="balanced_accuracy", boot=True, st_seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    recs = []
    for seed in range(3):
        base = 0.6 + 0.02 * seed
        reps = base + rng.normal(0, 0.03, B)  # replicate b: the same case resample for every encoder
        noise = rng.normal(0, 0.03, B)
        recs.append(_rec("random", "random", "finetune", seed, base, reps if boot else None, metric))
        # multi-task: exactly 0.1 above random init on every resample
        recs.append(_rec("mt", "multi-task", "finetune", seed, base + 0.1, reps + 0.1 if boot else None, metric))
        if seed in st_seeds:  # single-task: as good as multi-task up to resample noise
            recs.append(_rec("st", "single-task", "finetune", seed, base + 0.1, reps + 0.1 + noise if boot else None,
                             metric))
    return recs


def _by_pair(recs):
    return {(c.encoder, c.baseline): c for c in paired_comparisons(summarise(recs)["t"])}


def test_pretrained_vs_random_and_multi_vs_single():
    c = _by_pair(_records())
    # random is never compared with itself; single-task only against random; multi-task against both
    assert set(c) == {("mt", "random"), ("mt", "st"), ("st", "random")}
    mt = c[("mt", "random")].result
    assert mt.difference == pytest.approx(0.1) and mt.low == pytest.approx(0.1) and mt.high == pytest.approx(0.1)
    assert mt.p_value == 0.0 and c[("mt", "random")].verdict == "better"
    ms = c[("mt", "st")]
    assert ms.result.difference == pytest.approx(0.0, abs=1e-12)
    assert ms.result.low < 0 < ms.result.high and ms.verdict == "no clear difference"
    assert ms.result.n == B  # paired on the stored replicates (seeds x cases), not on 3 seeds only


def test_lower_is_better_flips_the_verdict():
    c = _by_pair(_records(metric="hd95"))
    assert c[("mt", "random")].result.difference == pytest.approx(0.1)
    assert c[("mt", "random")].verdict == "worse"


def test_common_seeds_only_and_seed_fallback():
    # single-task ran seeds 0 and 2 only: the comparison uses those two
    c = _by_pair(_records(st_seeds=(0, 2)))
    assert c[("st", "random")].result.difference == pytest.approx(0.1)
    # without replicates the seeds are the paired units: 3 seeds, sign-flip p = 2/8
    c = _by_pair(_records(boot=False))
    r = c[("mt", "random")].result
    assert r.n == 3 and r.difference == pytest.approx(0.1) and r.p_value == pytest.approx(0.25)


def test_report_shows_the_table(tmp_path):
    store = ResultStore(tmp_path)
    store.records = _records()
    store.save()
    page = build_report(tmp_path).read_text()
    assert "<h3>Paired comparisons</h3>" in page
    assert "<td>0.100 [0.100, 0.100]</td><td>0.000</td><td class='l met'>better</td>" in page
    assert page.count("no clear difference</td>") == 1
