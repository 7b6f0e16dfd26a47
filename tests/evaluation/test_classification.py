"""Golden cases for medfoundry.evaluation.classification (values computed by hand in comments)."""

import math
import warnings

import numpy as np
import pytest

from medfoundry.evaluation.classification import (
    accuracy,
    balanced_accuracy,
    binary_auroc,
    confusion_matrix,
    macro_auroc,
    macro_f1,
    multilabel_auroc,
)

Y_TRUE = [0, 0, 1, 1, 2]
Y_PRED = [0, 1, 1, 1, 0]


def test_accuracy_and_balanced_accuracy():
    # 3 of 5 correct -> 0.6; recalls: class0 1/2, class1 2/2, class2 0/1 -> mean 0.5
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.5)


def test_scores_are_argmaxed():
    probs = np.eye(3)[Y_PRED] * 0.7 + 0.1
    assert accuracy(Y_TRUE, probs) == pytest.approx(0.6)


def test_balanced_accuracy_skips_absent_class():
    # class 2 never true: recalls 1/2 and 2/2 -> 0.75 even with num_classes=3
    assert balanced_accuracy([0, 0, 1, 1], [0, 2, 1, 1], num_classes=3) == pytest.approx(0.75)


def test_macro_f1():
    # class0 TP1 FP1 FN1 -> 2/4 = 0.5; class1 TP2 FP1 FN0 -> 4/5 = 0.8; class2 TP0 FP0 FN1 -> 0
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)


def test_binary_auroc_without_ties():
    # positives 0.35 (beats 0.1, loses to 0.4) and 0.8 (beats both) -> 3 of 4 pairs
    assert binary_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_binary_auroc_ties_count_half():
    # pos 0.5 ties neg 0.5 (0.5) and beats 0.2 (1); pos 0.9 beats both (2) -> 3.5 / 4
    assert binary_auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # all scores equal -> 0.5
    assert binary_auroc([0, 1, 1, 0], [1, 1, 1, 1]) == pytest.approx(0.5)


def test_binary_auroc_single_class_is_nan():
    assert math.isnan(binary_auroc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_macro_auroc_skips_absent_class():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7]])
    # class 0: positives 0.8, 0.6 above negatives 0.3, 0.1 -> 1.0
    # class 1: positives 0.6 (beats 0.1, 0.3), 0.2 (beats 0.1 only) -> 3/4
    # class 2 absent from y_true -> NaN, skipped: macro = 0.875
    mean, per = macro_auroc([0, 0, 1, 1], probs, per_class=True)
    assert mean == pytest.approx(0.875)
    assert per[0] == pytest.approx(1.0) and per[1] == pytest.approx(0.75) and math.isnan(per[2])


def test_multilabel_auroc_nan_for_constant_label():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.3], [0.2, 0.1], [0.1, 0.5]])
    # label 0: positives 0.9 (beats 0.2) and 0.1 (loses) -> 1/2; label 1 all negative -> NaN
    per, macro = multilabel_auroc(y, s)
    assert per[0] == pytest.approx(0.5) and math.isnan(per[1])
    assert macro == pytest.approx(0.5)


def test_shape_errors_name_the_function():
    with pytest.raises(ValueError, match="accuracy"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="multilabel_auroc"):
        multilabel_auroc(np.zeros((3, 2)), np.zeros((3, 3)))


# Against scikit-learn (a test-only dependency) on random inputs with ties.


def _sk_case(rng, n_classes):
    n = int(rng.integers(5, 60))
    y = rng.integers(0, n_classes, n)
    # Coarse scores: ties in the rankings and in the argmax.
    scores = np.round(rng.random((n, n_classes)), 1)
    return y, scores


@pytest.mark.parametrize("seed", range(5))
def test_label_metrics_equal_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    for _ in range(20):
        c = int(rng.integers(2, 6))
        y, scores = _sk_case(rng, c)
        pred = np.argmax(scores, axis=1)
        assert accuracy(y, scores) == pytest.approx(metrics.accuracy_score(y, pred), abs=1e-15)
        assert macro_f1(y, pred) == pytest.approx(metrics.f1_score(y, pred, average="macro"), abs=1e-15)
        np.testing.assert_array_equal(confusion_matrix(y, pred, c),
                                      metrics.confusion_matrix(y, pred, labels=list(range(c))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns when a predicted class is absent from y
            want = metrics.balanced_accuracy_score(y, pred)
        assert balanced_accuracy(y, pred) == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equal_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        c = int(rng.integers(2, 5))
        y, scores = _sk_case(rng, c)
        _, per_class = macro_auroc(y, scores, per_class=True)
        for k in range(c):
            if 0 < np.count_nonzero(y == k) < y.size:
                want = metrics.roc_auc_score(y == k, scores[:, k])
                assert per_class[k] == pytest.approx(want, abs=1e-12)
                assert binary_auroc(y == k, scores[:, k]) == pytest.approx(want, abs=1e-12)


def test_multilabel_auroc_equals_sklearn_per_label():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    targets = (rng.random((50, 4)) > 0.6).astype(int)
    scores = np.round(rng.random((50, 4)), 1)
    per_label, macro = multilabel_auroc(targets, scores)
    want = metrics.roc_auc_score(targets, scores, average=None)
    np.testing.assert_allclose(per_label, want, rtol=0, atol=1e-12)
    assert macro == pytest.approx(metrics.roc_auc_score(targets, scores, average="macro"), abs=1e-12)
