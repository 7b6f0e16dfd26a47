"""medfoundry.evaluation.tasks: dispatch by task kind on hand-computed cases."""

import math

import numpy as np
import pytest

from medfoundry.data.tasks import TaskKind, TaskSpec
from medfoundry.evaluation.tasks import (
    chance_level,
    higher_is_better,
    primary_bootstrap,
    primary_metric,
    task_metrics,
)

CLS = TaskSpec("c", "classification", ("a", "b", "c"), "x-ray", 2, (8, 8), 1)
ML = TaskSpec("m", "multilabel", ("p", "q"), "microscopic", 2, (8, 8), 3)
SEG = TaskSpec("s", "segmentation", ("bg", "one", "two"), "tomographic", 2, (4, 4), 1)
DET = TaskSpec("d", "detection", ("box",), "microscopic", 2, (32, 32), 1)


def test_primary_and_chance():
    assert [primary_metric(k) for k in TaskKind] == ["balanced_accuracy", "auroc", "dice", "map50"]
    assert chance_level(CLS) == pytest.approx(1 / 3)
    assert chance_level(ML) == 0.5 and chance_level(SEG) == 0.0
    assert higher_is_better("dice") and not higher_is_better("hd95/one")


def test_classification():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    y = [0, 1, 2, 2]
    m = task_metrics(CLS, list(probs), y)
    # predictions 0, 1, 1, 2: 3/4 correct; recalls 1, 1, 1/2 -> 5/6
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="C=3"):
        task_metrics(CLS, [np.zeros(2)], [0])


def test_multilabel():
    s = [np.array([0.9, 0.1]), np.array([0.2, 0.8]), np.array([0.6, 0.4])]
    t = [np.array([1, 0]), np.array([0, 1]), np.array([0, 0])]
    m = task_metrics(ML, s, t)
    # p: pos 0.9 > 0.2, 0.6 -> 1; q: pos 0.8 > 0.1, 0.4 -> 1
    assert m["auroc"] == pytest.approx(1.0) and m["auroc/q"] == pytest.approx(1.0)
    # thresholded at 0.5: 5 of 6 labels right (sample 3, label p wrong)
    assert m["label_accuracy"] == pytest.approx(5 / 6)


def test_segmentation_means_over_cases_and_classes():
    ref = np.zeros((4, 4), int)
    ref[0, 0:2] = 1
    pred = ref.copy()
    pred[1, 0] = 1  # class 1 Dice 0.8, class 2 absent from both -> NaN (excluded)
    ref2 = np.zeros((4, 4), int)
    ref2[3, 3] = 2
    pred2 = np.zeros((4, 4), int)
    pred2[3, 0] = 2  # class 2 Dice 0, class 1 NaN
    m = task_metrics(SEG, [pred, pred2], [ref, ref2], spacings=[(1.0, 1.0), (2.0, 2.0)])
    # case means 0.8 and 0.0 -> 0.4
    assert m["dice"] == pytest.approx(0.4)
    assert m["dice/one"] == pytest.approx(0.8) and m["dice/two"] == pytest.approx(0.0)
    if "hd95" in m and not math.isnan(m["hd95"]):
        # case 2: single pixels 3 columns apart at 2 mm -> 6 mm
        assert m["hd95/two"] == pytest.approx(6.0)


def test_detection():
    p = [{"boxes": np.array([[0, 0, 10, 10]]), "scores": np.array([0.9]), "labels": np.array([0])}]
    g = [{"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([0])}]
    m = task_metrics(DET, p, g)
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)


def test_bootstrap_replicates_are_paired_and_correct():
    probs = np.eye(3)[[0, 1, 1, 2]]
    y = [0, 1, 2, 2]
    reps = primary_bootstrap(CLS, list(probs), y, n_boot=50, seed=0)
    assert reps.shape == (50,) and np.all((reps >= 0) & (reps <= 1))
    assert np.array_equal(reps, primary_bootstrap(CLS, list(probs), y, n_boot=50, seed=0))
    perfect = primary_bootstrap(CLS, list(np.eye(3)[y]), y, n_boot=20)
    assert np.allclose(perfect, 1.0)


def test_primary_score_matches_task_metrics():
    from medfoundry.evaluation.tasks import primary_score

    ref = np.zeros((4, 4), int)
    ref[0, 0:2] = 1
    pred = ref.copy()
    pred[1, 0] = 1
    assert primary_score(SEG, [pred], [ref]) == pytest.approx(0.8)
    probs = list(np.eye(3)[[0, 1, 1]])
    assert primary_score(CLS, probs, [0, 1, 2]) == pytest.approx(task_metrics(CLS, probs, [0, 1, 2])["balanced_accuracy"])
