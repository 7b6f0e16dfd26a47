"""Data-efficiency plots: primary metric against the fraction of training data.

Matplotlib with the Agg backend (no display needed); figures are written atomically as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils import atomic_path

__all__ = ["Curve", "efficiency_plot", "figure_png_bytes"]


class Curve:
    """One line of a data-efficiency plot.

    Attributes:
        label: legend text, e.g. ``"multitask / frozen"``.
        fractions: training-data fractions in (0, 1], increasing.
        mean: metric per fraction (mean over seeds).
        low, high: bootstrap CI bounds per fraction (NaN: no band at that point).
        style: ``"-"`` solid for pretrained encoders, ``"--"`` for baselines.
    """

    def __init__(self, label: str, fractions: Sequence[float], mean: Sequence[float],
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None, style: str = "-"):
        self.label = label
        self.fractions = np.asarray(fractions, dtype=float)
        self.mean = np.asarray(mean, dtype=float)
        self.low = np.full_like(self.mean, np.nan) if low is None else np.asarray(low, dtype=float)
        self.high = np.full_like(self.mean, np.nan) if high is None else np.asarray(high, dtype=float)
        self.style = style


def _figure(curves: Sequence[Curve], title: str, metric: str, reference: float | None,
            reference_label: str, chance: float | None):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        ok = np.isfinite(c.mean)
        ax.plot(c.fractions[ok], c.mean[ok], c.style, marker="o", ms=4, color=color, label=c.label)
        band = ok & np.isfinite(c.low) & np.isfinite(c.high)
        if band.sum() >= 1:
            ax.fill_between(c.fractions[band], c.low[band], c.high[band], color=color, alpha=0.18, lw=0)
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="0.3", ls=":", lw=1.2, label=reference_label)
    if chance is not None and np.isfinite(chance) and chance > 0:
        ax.axhline(chance, color="0.6", ls="-.", lw=0.8, label="chance")
    ax.set_xscale("log")
    fr = sorted({float(f) for c in curves for f in c.fractions})
    if fr:
        ax.set_xticks(fr)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g} %"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlim(min(fr) / 1.4, max(fr) * 1.4)
    ax.set_xlabel("fraction of training data (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig, plt


def figure_png_bytes(curves: Sequence[Curve], title: str, metric: str, reference: float | None = None,
                     reference_label: str = "random init, 100 %", chance: float | None = None) -> bytes:
    """The plot as PNG bytes (for embedding in HTML)."""
    fig, plt = _figure(curves, title, metric, reference, reference_label, chance)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def efficiency_plot(curves: Sequence[Curve], path: str | Path, title: str, metric: str,
                    reference: float | None = None, reference_label: str = "random init, 100 %",
                    chance: float | None = None) -> bytes:
    """Draw metric vs. fraction (log x-axis, one line and CI band per curve) to ``path`` (PNG).

    Args:
        curves: the lines.
        path: output PNG, written atomically.
        title: plot title (the task).
        metric: y-axis label (the primary metric).
        reference: horizontal line, e.g. the random-init baseline at 100 % data.
        reference_label: legend text of the reference line.
        chance: chance level line (omitted when 0 or None).

    Returns:
        The PNG bytes that were written.
    """
    data = figure_png_bytes(curves, title, metric, reference, reference_label, chance)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return data
