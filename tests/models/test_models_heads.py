"""Heads: losses on hand-made logits, decoding of hand-placed outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfoundry.data.tasks import TaskSpec
from medfoundry.errors import ConfigError
from medfoundry.models.heads import (
    ClassificationHead,
    DetectionHead,
    MultilabelHead,
    SegmentationHead,
    create_head,
)

CLS = TaskSpec("cls", "classification", ("a", "b", "c", "d"), "x-ray", 2, (32, 32), 1)
ML = TaskSpec("ml", "multilabel", ("p", "q", "r"), "microscopic", 2, (32, 32), 3)
SEG = TaskSpec("seg", "segmentation", ("bg", "fg"), "tomographic", 2, (8, 8), 1)
DET = TaskSpec("det", "detection", ("cell", "nucleus"), "microscopic", 2, (32, 32), 1)
DET3 = TaskSpec("det3", "detection", ("lesion",), "tomographic", 3, (16, 16, 16), 1)
ENC = [8, 16, 32, 64]


def test_create_head_dispatches_on_kind():
    for spec, cls in [(CLS, ClassificationHead), (ML, MultilabelHead), (SEG, SegmentationHead), (DET, DetectionHead)]:
        head = create_head(spec, ENC, 16)
        assert type(head) is cls
        assert head.uses_decoder == (cls in (SegmentationHead, DetectionHead))
    with pytest.raises(ConfigError, match="score_treshold"):
        create_head(DET, ENC, 16, score_treshold=0.3)


def test_classification_loss_hand_values():
    head = create_head(CLS, ENC, 16)
    target = torch.tensor([0, 3])
    assert head.loss(torch.zeros(2, 4), target).item() == pytest.approx(1.0, abs=1e-6)
    perfect = torch.tensor([[30.0, 0, 0, 0], [0, 0, 0, 30.0]])
    assert head.loss(perfect, target).item() < 1e-6
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    expected = math.log(1 + 3 * math.exp(-2)) / math.log(4)  # -log softmax_0 / ln 4
    assert head.loss(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_classification_forward_and_decode():
    head = create_head(CLS, ENC, 16)
    feats = [torch.randn(2, c, 4, 4) for c in ENC]
    out = head(feats)
    assert out.shape == (2, 4)
    probs = head.decode(torch.tensor([[0.0, 0.0, 0.0, math.log(5.0)]]))
    assert probs[0].dtype == np.float32 and probs[0].shape == (4,)
    np.testing.assert_allclose(probs[0], [0.125, 0.125, 0.125, 0.625], rtol=1e-6)


def test_multilabel_loss_and_decode():
    head = create_head(ML, ENC, 16)
    target = torch.tensor([[1.0, 0.0, 1.0]])
    assert head.loss(torch.zeros(1, 3), target).item() == pytest.approx(1.0, abs=1e-6)
    assert head.loss(torch.tensor([[20.0, -20.0, 20.0]]), target).item() < 1e-6
    # missing labels (NaN) are ignored: only the first entry counts here
    logits = torch.tensor([[1.0, 5.0, -5.0]])
    partial = torch.tensor([[1.0, float("nan"), float("nan")]])
    expected = math.log(1 + math.exp(-1.0)) / math.log(2)
    assert head.loss(logits, partial).item() == pytest.approx(expected, rel=1e-5)
    scores = head.decode(torch.tensor([[0.0, 100.0, -100.0]]))[0]
    np.testing.assert_allclose(scores, [0.5, 1.0, 0.0], atol=1e-6)
    assert scores.dtype == np.float32


def test_segmentation_loss_hand_values():
    head = create_head(SEG, ENC, 16)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:4, 2:6] = 1  # 8 foreground pixels of 128
    uniform = torch.zeros(2, 2, 8, 8)
    n_fg, n = 8.0, 128.0
    s = head.smooth
    dice_loss = 1 - (2 * 0.5 * n_fg + s) / (0.5 * n + n_fg + s)
    assert head.loss(uniform, target).item() == pytest.approx(0.5 * (1.0 + dice_loss), rel=1e-5)
    perfect = torch.stack([(target == 0).float(), (target == 1).float()], dim=1) * 40 - 20
    assert head.loss(perfect, target).item() < 1e-4
    with pytest.raises(ValueError, match="image_size"):
        head.loss(torch.zeros(2, 2, 4, 4), target)


def test_segmentation_forward_upsamples_and_decodes():
    head = create_head(SEG, ENC, 16)
    out = head(torch.randn(2, 16, 2, 2), image_size=(8, 8))
    assert out.shape == (2, 2, 8, 8)
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, 3:5, 1:7] = 5.0
    label = head.decode(logits)[0]
    assert label.dtype == np.int64 and label.shape == (8, 8)
    expected = np.zeros((8, 8), np.int64)
    expected[3:5, 1:7] = 1
    np.testing.assert_array_equal(label, expected)


def _det_output(head, shape, peaks, image_size):
    """Heatmap logits -20 everywhere except +20 at each (b, k, y, x); regression zero except
    at the peaks (offset, log extent in cells)."""
    d = len(shape)
    heat = torch.full((1, head.num_classes, *shape), -20.0)
    reg = torch.zeros(1, 2 * d, *shape)
    for k, cell, off, logext in peaks:
        heat[(0, k, *cell)] = 20.0
        reg[(0, slice(None), *cell)] = torch.tensor(list(off) + list(logext))
    return {"heatmap": heat, "regression": reg, "image_size": image_size}


def test_detection_decode_hand_placed_peak():
    head = create_head(DET, ENC, 16, stride=4)
    # class 1 at row 2, column 3: centre x = (3 + 0.5) * 4 = 14, y = (2 + 0.25) * 4 = 9;
    # extent 8 x 4 px = 2 x 1 cells
    out = _det_output(head, (8, 8), [(1, (2, 3), (0.5, 0.25), (math.log(2), 0.0))], (32, 32))
    pred = head.decode(out)[0]
    np.testing.assert_allclose(pred["boxes"], [[10.0, 7.0, 18.0, 11.0]], atol=1e-4)
    np.testing.assert_array_equal(pred["labels"], [1])
    assert pred["scores"][0] == pytest.approx(1 / (1 + math.exp(-20)))
    assert pred["boxes"].dtype == np.float32 and pred["labels"].dtype == np.int64
    # nothing above the threshold -> empty arrays of the right shapes
    empty = head.decode(_det_output(head, (8, 8), [], (32, 32)))[0]
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].shape == (0,)


def test_detection_decode_clips_and_suppresses():
    head = create_head(DET, ENC, 16, stride=4)
    # two adjacent peaks (not local maxima of each other's window? both 20 -> tie, both kept by
    # max-pool) describing the same box: NMS keeps one; a box leaving the image is clipped
    out = _det_output(head, (8, 8), [(0, (4, 4), (0.5, 0.5), (math.log(3), math.log(3))),
                                     (0, (4, 5), (-0.5, 0.5), (math.log(3), math.log(3))),
                                     (1, (0, 0), (0.0, 0.0), (0.0, 0.0))], (32, 32))
    pred = head.decode(out)[0]
    assert sorted(pred["labels"].tolist()) == [0, 1]
    i0 = pred["labels"].tolist().index(0)
    np.testing.assert_allclose(pred["boxes"][i0], [12.0, 12.0, 24.0, 24.0], atol=1e-4)
    i1 = pred["labels"].tolist().index(1)
    np.testing.assert_allclose(pred["boxes"][i1], [0.0, 0.0, 2.0, 2.0], atol=1e-4)  # (-2, -2, 2, 2) clipped


def test_detection_loss_perfect_prior_and_empty():
    torch.manual_seed(0)
    head = create_head(DET, ENC, 16, stride=4)
    target = [{"boxes": torch.tensor([[10.0, 7.0, 18.0, 11.0]]), "labels": torch.tensor([1])}]
    perfect = _det_output(head, (8, 8), [(1, (2, 3), (0.5, 0.25), (math.log(2), 0.0))], (32, 32))
    assert head.loss(perfect, target).item() < 0.02
    # a constant prediction at the prior scores exactly 1 on the heatmap part, whatever the target
    prior_logit = math.log(head.prior / (1 - head.prior))
    prior = dict(perfect, heatmap=torch.full_like(perfect["heatmap"], prior_logit))
    assert head.loss(prior, target).item() == pytest.approx(0.5 * 1.0 + 0.5 * 0.0, abs=1e-4)
    two = [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0], [16.0, 16.0, 30.0, 24.0]]), "labels": torch.tensor([0, 1])}]
    assert head.loss(dict(prior, regression=perfect["regression"]), two).item() > 0.5
    # an untrained head on random features is about 1
    out = head(torch.randn(2, 16, 8, 8), image_size=(32, 32))
    loss = head.loss(out, target + two)
    assert 0.5 < loss.item() < 1.5
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    # no objects: only the heatmap term, still finite and differentiable
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    value = head.loss(head(torch.randn(1, 16, 8, 8)), empty)
    assert torch.isfinite(value) and value.requires_grad
    with pytest.raises(ValueError, match="labels"):
        head.loss(perfect, [{"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([5])}])


def test_detection_3d_round_trip():
    head = create_head(DET3, ENC, 16, stride=4)
    # cell (z, y, x) = (1, 2, 3): centre x = 14, y = 10, z = 6; extent 4 px each
    out = _det_output(head, (4, 4, 4), [(0, (1, 2, 3), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0))], (16, 16, 16))
    pred = head.decode(out)[0]
    np.testing.assert_allclose(pred["boxes"], [[12.0, 8.0, 4.0, 16.0, 12.0, 8.0]], atol=1e-4)
    target = [{"boxes": torch.tensor(pred["boxes"]), "labels": torch.tensor([0])}]
    assert head.loss(out, target).item() < 0.02


def test_heads_do_not_score_themselves():
    # The model does not score itself: metrics and the primary metric belong to the kind.
    import medfoundry.models.heads as heads_pkg
    from medfoundry.evaluation.tasks import task_metrics

    for spec in (CLS, ML, SEG, DET):
        head = create_head(spec, ENC, 16)
        assert not hasattr(head, "metrics") and not hasattr(head, "primary_metric")
    for module in (heads_pkg.base, heads_pkg.pooled, heads_pkg.dense, heads_pkg.detection):
        assert "evaluation" not in open(module.__file__, encoding="utf-8").read()
    head = create_head(CLS, ENC, 16)
    preds = head.decode(torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]]))
    assert task_metrics(CLS, preds, [0, 1, 2, 0])["accuracy"] == pytest.approx(0.75)
    seg = create_head(SEG, ENC, 16)
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, :4] = 5.0  # predicts the top half
    target = np.zeros((8, 8), np.int64)
    target[:2] = 1  # top quarter: Dice = 2 * 16 / (32 + 16)
    assert task_metrics(SEG, seg.decode(logits), [target])["dice"] == pytest.approx(2 / 3)


def test_classification_label_smoothing_keeps_scale():
    head = create_head(CLS, ENC, 16, label_smoothing=0.1)
    assert head.loss(torch.zeros(3, 4), torch.tensor([0, 1, 2])).item() == pytest.approx(1.0, abs=1e-6)
    # smoothed CE of a confident correct logit: 0.925 * softplus-like term + 0.025 * 3 * (20 + log Z)
    logits = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    log_z = math.log(math.exp(20.0) + 3)
    expected = (0.925 * (log_z - 20.0) + 0.025 * 3 * log_z) / math.log(4)
    assert head.loss(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="class indices"):
        head.loss(torch.zeros(2, 4), torch.zeros(2, 4))


def test_segmentation_ignore_index_and_bad_labels():
    head = create_head(SEG, ENC, 16, ignore_index=255)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4, :4] = 1
    logits = torch.stack([(target == 0).float(), (target == 1).float()], dim=1) * 40 - 20
    ignored = target.clone()
    ignored[0, 4:] = 255
    wrong = logits.clone()
    wrong[:, :, 4:] = -wrong[:, :, 4:]  # wrong only where the target is ignored
    assert head.loss(wrong, ignored).item() < 1e-4
    assert head.loss(wrong, target).item() > 0.3
    with pytest.raises(ValueError, match="2 classes"):
        create_head(SEG, ENC, 16).loss(logits, ignored)


def test_detection_anisotropic_stride():
    head = create_head(DET3, ENC, 16, stride=(2, 4, 4))  # array order: z stride 2, y/x stride 4
    assert head.stride_per_axis == (2, 4, 4)
    # cell (z, y, x) = (3, 2, 1): centre x = 1.5 * 4 = 6, y = 2.5 * 4 = 10, z = 3.5 * 2 = 7;
    # extent one cell per axis: 4 x 4 x 2 px
    out = _det_output(head, (8, 4, 4), [(0, (3, 2, 1), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0))], (16, 16, 16))
    pred = head.decode(out)[0]
    np.testing.assert_allclose(pred["boxes"], [[4.0, 8.0, 6.0, 8.0, 12.0, 8.0]], atol=1e-4)
    assert head.loss(out, [{"boxes": torch.tensor(pred["boxes"]), "labels": torch.tensor([0])}]).item() < 0.02
