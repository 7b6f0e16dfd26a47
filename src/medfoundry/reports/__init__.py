"""Reports: data-efficiency plots (matplotlib, Agg), goal verdicts and a self-contained HTML report."""

from .html import build_report as build_report
from .html import smoke_reasons as smoke_reasons
from .html import summarise as summarise
from .plots import Curve as Curve
from .plots import efficiency_plot as efficiency_plot
from .verdicts import goal_status as goal_status
from .verdicts import goal_verdicts as goal_verdicts

__all__ = ["build_report", "goal_verdicts", "goal_status", "smoke_reasons", "summarise", "Curve", "efficiency_plot"]
