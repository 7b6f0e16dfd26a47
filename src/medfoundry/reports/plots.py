"""Data-efficiency plots: primary metric against the fraction of training data.

Matplotlib with the Agg backend (no display needed). A figure has one panel per mode
(frozen, fine-tuned) with the legend outside the axes, and the number of training images
under each fraction; it is written atomically as PNG (embedded in the report) and as SVG
and PDF beside it (for papers), with fixed metadata so equal results give equal files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..utils import atomic_path

__all__ = ["Curve", "efficiency_plot", "figure_png_bytes", "figure_bytes", "FORMATS"]


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


Panels = Union[Sequence[Curve], Mapping[str, Sequence[Curve]]]
FORMATS = ("png", "svg", "pdf")
# Fixed creation metadata: the same results give byte-identical SVG and PDF files.
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}, "png": {}}


def _tick(fraction: float, counts: Mapping[float, int] | None) -> str:
    n = None if counts is None else next((v for f, v in counts.items() if abs(f - fraction) < 1e-9), None)
    return f"{100 * fraction:g} %" + ("" if n is None else f"\nn={n}")


def _figure(panels: Panels, title: str, metric: str, reference: float | None, reference_label: str,
            chance: float | None, counts: Mapping[float, int] | None = None):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter

    panels = dict(panels) if isinstance(panels, Mapping) else {"": list(panels)}
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names) + 2.2, 4.2), dpi=100, sharey=True,
                             squeeze=False)
    colors: dict[str, str] = {}  # one colour per curve label in every panel
    handles: dict[str, Any] = {}
    fr = sorted({float(f) for cs in panels.values() for c in cs for f in c.fractions})
    for ax, name in zip(axes[0], names):
        for c in panels[name]:
            color = colors.setdefault(c.label, f"C{len(colors) % 10}")
            ok = np.isfinite(c.mean)
            (line,) = ax.plot(c.fractions[ok], c.mean[ok], c.style, marker="o", ms=4, color=color, label=c.label)
            handles.setdefault(c.label, line)
            band = ok & np.isfinite(c.low) & np.isfinite(c.high)
            if band.sum() >= 1:
                ax.fill_between(c.fractions[band], c.low[band], c.high[band], color=color, alpha=0.18, lw=0)
        if reference is not None and np.isfinite(reference):
            handles.setdefault(reference_label, ax.axhline(reference, color="0.3", ls=":", lw=1.2,
                                                           label=reference_label))
        if chance is not None and np.isfinite(chance) and chance > 0:
            handles.setdefault("chance", ax.axhline(chance, color="0.6", ls="-.", lw=0.8, label="chance"))
        ax.set_xscale("log")
        if fr:
            ax.xaxis.set_major_locator(FixedLocator(fr))
            ax.set_xticklabels([_tick(f, counts) for f in fr], fontsize=7)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(min(fr) / 1.4, max(fr) * 1.4)
        ax.set_xlabel("training data: fraction" + (" and images" if counts else "") + " (log scale)")
        ax.set_title(name or title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    if names != [""]:
        fig.suptitle(title)
    # the legend sits outside the axes, right of the last panel, so it never hides a curve
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    return fig, plt


def figure_bytes(panels: Panels, title: str, metric: str, reference: float | None = None,
                 reference_label: str = "random init, 100 %", chance: float | None = None,
                 counts: Mapping[float, int] | None = None, formats: Sequence[str] = ("png",)) -> dict[str, bytes]:
    """The plot in each of ``formats`` (png, svg, pdf) as bytes."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"figure formats {bad}: expected some of {list(FORMATS)}")
    fig, plt = _figure(panels, title, metric, reference, reference_label, chance, counts)
    out = {}
    try:
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, bbox_inches="tight", metadata=_METADATA[fmt])
            out[fmt] = buf.getvalue()
    finally:
        plt.close(fig)
    return out


def figure_png_bytes(curves: Panels, title: str, metric: str, reference: float | None = None,
                     reference_label: str = "random init, 100 %", chance: float | None = None,
                     counts: Mapping[float, int] | None = None) -> bytes:
    """The plot as PNG bytes (for embedding in HTML)."""
    return figure_bytes(curves, title, metric, reference, reference_label, chance, counts)["png"]


def efficiency_plot(curves: Panels, path: str | Path, title: str, metric: str,
                    reference: float | None = None, reference_label: str = "random init, 100 %",
                    chance: float | None = None, counts: Mapping[float, int] | None = None,
                    formats: Sequence[str] = FORMATS) -> bytes:
    """Draw metric vs. fraction (log x-axis, one line and CI band per curve) to ``path`` and beside it.

    Args:
        curves: the lines, or ``{panel title: lines}`` for one panel each (e.g. per mode).
        path: output PNG; the other ``formats`` go beside it with their suffix (``.svg``,
            ``.pdf``, for print). Every file is written atomically.
        title: plot title (the task).
        metric: y-axis label (the primary metric).
        reference: horizontal line, e.g. the random-init baseline at 100 % data.
        reference_label: legend text of the reference line.
        chance: chance level line (omitted when 0 or None).
        counts: training images per fraction, shown under each fraction's tick.
        formats: files to write (``png`` always).

    Returns:
        The PNG bytes that were written.
    """
    data = figure_bytes(curves, title, metric, reference, reference_label, chance, counts,
                        formats=tuple(dict.fromkeys(("png", *formats))))
    path = Path(path)
    for fmt, blob in data.items():
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            tmp.write_bytes(blob)
    return data["png"]
