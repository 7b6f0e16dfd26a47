"""Box utilities on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from medfoundry.models.boxes import (
    batched_nms,
    box_area,
    box_iou,
    generalized_box_iou,
    nms,
    paired_generalized_box_iou,
)


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)
    # [0,2]^2 vs [1,3]^2: inter 1, union 4 + 4 - 1 = 7
    expected = torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    assert torch.allclose(iou, expected)
    assert torch.allclose(box_area(a), torch.tensor([4.0, 1.0]))


def test_box_iou_3d_and_degenerate():
    a = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 3.0, 3.0, 3.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 15]]))  # 1 / (8 + 8 - 1)
    zero = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(zero, zero).item() == 0.0
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        box_iou(torch.zeros(2, 5), torch.zeros(2, 5))


def test_generalized_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    # disjoint: IoU 0, hull 3, union 2 -> GIoU = -(3 - 2) / 3
    assert torch.allclose(generalized_box_iou(a, b), torch.tensor([[-1 / 3]]))
    assert torch.allclose(generalized_box_iou(a, a), torch.tensor([[1.0]]))
    torch.manual_seed(0)
    lo = torch.rand(5, 3) * 10
    p, q = torch.cat([lo, lo + torch.rand(5, 3) * 5], 1), torch.cat([lo + 1, lo + 1 + torch.rand(5, 3) * 5], 1)
    assert torch.allclose(paired_generalized_box_iou(p, q), torch.diagonal(generalized_box_iou(p, q)))


def test_nms_suppresses_overlaps_only():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # kept (best)
                          [1.0, 1.0, 11.0, 11.0],   # IoU 81/119 = 0.68 with box 0 -> suppressed
                          [20.0, 20.0, 30.0, 30.0],  # disjoint -> kept
                          [0.0, 0.0, 10.0, 5.0]])   # IoU 0.5 with box 0 -> kept at threshold 0.5
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.4).tolist() == [0, 2]
    # order follows scores, not input position
    assert nms(boxes, torch.tensor([0.1, 0.8, 0.7, 0.6]), 0.5).tolist() == [1, 2, 3]


def test_nms_ties_and_empty():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # tie: lowest index wins
    assert nms(boxes, torch.tensor([0.5, 0.7, 0.7]), 0.5).tolist() == [1]
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.numel() == 0
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, torch.zeros(2), 0.5)


def test_batched_nms_keeps_other_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 0])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
