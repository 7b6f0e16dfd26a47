"""Metrics: classification, segmentation and surface distances (Dice, HD95, NSD), detection
(COCO), registration (Learn2Reg), ranking, bootstrap intervals and paired comparisons.

Import the submodule you need, e.g. ``from medfoundry.evaluation.segmentation import dice``.
Which reference code each metric equals: docs/evaluation_protocols.md, "Metric functions".
"""
