"""Golden cases for medfoundry.evaluation.segmentation (values computed by hand in comments)."""

import math

import numpy as np
import pytest

from medfoundry.evaluation.segmentation import dice, hd95, per_class_dice


def test_dice_counts():
    ref = np.zeros((4, 4), int)
    ref[0, 0:2] = 1  # 2 pixels
    pred = ref.copy()
    pred[1, 0] = 1  # 3 pixels, 2 shared -> 2 * 2 / (3 + 2) = 0.8
    assert dice(pred, ref, 1) == pytest.approx(0.8)


def test_dice_empty_policies():
    z = np.zeros((3, 3), int)
    one = z.copy()
    one[1, 1] = 1
    assert math.isnan(dice(z, z, 1))
    assert dice(z, z, 1, empty="one") == 1.0
    assert dice(one, z, 1) == 0.0 and dice(z, one, 1, empty="one") == 0.0
    with pytest.raises(ValueError, match="empty"):
        dice(z, z, 1, empty="zero")


def test_per_class_dice_3d_excludes_background():
    ref = np.zeros((2, 3, 3), int)
    ref[0, 0, 0] = 1
    ref[1, :, :] = 2  # 9 voxels of class 2
    pred = ref.copy()
    pred[1, 0, 0] = 0  # class 2: 8 predicted, 8 shared -> 16 / 17
    out = per_class_dice(pred, ref, num_classes=4)
    # class 1 perfect, class 2 16/17, class 3 empty in both -> NaN
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(16 / 17) and math.isnan(out[2])


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


surface = pytest.importorskip("medfoundry.evaluation.surface")


def test_hd95_single_pixels_pixels_and_mm():
    a = np.zeros((4, 4), int)
    b = np.zeros((4, 4), int)
    a[0, 0] = 1
    b[0, 3] = 1  # 3 columns apart: 3 px; with spacing (1 mm rows, 2 mm columns) 6 mm
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(6.0)


def test_hd95_empty_policies():
    a = np.zeros((4, 4), int)
    b = a.copy()
    b[1, 1] = 1
    assert math.isnan(hd95(a, a))
    assert math.isnan(hd95(a, b))
    # diagonal penalty of a 4 x 4 image: sqrt(16 + 16) px; with spacing (1, 2): sqrt(16 + 64) mm
    assert hd95(a, b, empty="diagonal") == pytest.approx(math.sqrt(32))
    assert hd95(b, a, spacing=(1, 2), empty="diagonal") == pytest.approx(math.sqrt(80))


def test_nsd_per_label_and_empty_policies():
    seg = pytest.importorskip("medfoundry.evaluation.segmentation")
    pred = np.zeros((10, 10), int)
    ref = np.zeros((10, 10), int)
    pred[2:6, 2:6] = 1
    ref[2:6, 3:7] = 1  # label 1 shifted by one pixel
    ref[7:9, 7:9] = 2  # label 2 missing from pred
    assert seg.nsd(pred, ref, 1, spacing=(1.0, 1.0), tolerance_mm=1.0) == 1.0
    assert seg.nsd(pred, ref, 1, spacing=(1.0, 3.0), tolerance_mm=1.0) < 1.0  # the shift is 3 mm
    assert seg.nsd(pred, ref, 2, spacing=(1.0, 1.0)) == 0.0
    assert np.isnan(seg.nsd(pred, ref, 3, spacing=(1.0, 1.0)))
    assert seg.nsd(pred, ref, 3, spacing=(1.0, 1.0), empty="one") == 1.0
    values = seg.per_class_nsd(pred, ref, num_classes=3, spacing=(1.0, 1.0), tolerance_mm=1.0)
    assert values.tolist() == [1.0, 0.0]
