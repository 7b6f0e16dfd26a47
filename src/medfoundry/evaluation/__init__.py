"""Metrics: classification, segmentation, detection, registration (Learn2Reg) and ranking.

Import the submodule you need, e.g. ``from medfoundry.evaluation.segmentation import dice``.
"""
