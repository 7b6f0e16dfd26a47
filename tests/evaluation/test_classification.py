"""Golden cases for medfoundry.evaluation.classification (values computed by hand in comments)."""

import math

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
