"""Reports: data-efficiency plots (matplotlib, Agg) and a self-contained HTML report."""

from .html import build_report as build_report
from .html import goal_verdicts as goal_verdicts
from .html import summarise as summarise
from .plots import Curve as Curve
from .plots import efficiency_plot as efficiency_plot

__all__ = ["build_report", "goal_verdicts", "summarise", "Curve", "efficiency_plot"]
