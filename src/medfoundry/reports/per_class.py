"""Per-class results and confusion matrices of a task's key runs, as HTML.

Key runs: the random-init reference (fine-tuned, 100 %) and every pretrained encoder at the
task's goal fraction and at 100 %, in each mode it ran. Classification runs store their
confusion matrix on the test split (``record["confusion"]``, rows true class, columns
predicted; see :mod:`medfoundry.transfer.efficiency`): per-class recall and F1 come from the
matrix summed over seeds. Other kinds show the per-class entries of the primary metric that
their task metrics already hold (``dice/<label>`` for segmentation), averaged over seeds.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import numpy as np

from ..transfer.config import TransferConfig

__all__ = ["key_runs", "per_class_values", "per_class_section", "recall_f1"]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def key_runs(records: Sequence[dict[str, Any]], role: str | None, cfg: TransferConfig
             ) -> list[tuple[str, str, float, list[dict[str, Any]]]]:
    """``(encoder, mode, fraction, runs)`` of the key runs of one task's ``status == "ok"`` records."""
    goal = cfg.goal_fraction(role) or 1.0
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    kinds: dict[str, str] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        kinds[r["encoder"]] = r.get("encoder_kind", "weights")
        groups.setdefault((r["encoder"], r["mode"], float(r["fraction"])), []).append(r)
    out = []
    for (enc, mode, frac), runs in sorted(groups.items()):
        reference = kinds[enc] == "random" and mode == "finetune" and _close(frac, 1.0)
        if reference or (kinds[enc] != "random" and (_close(frac, goal) or _close(frac, 1.0))):
            out.append((enc, mode, frac, sorted(runs, key=lambda r: r["seed"])))
    return out


def recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and F1 of a (true, predicted) count matrix (NaN where undefined)."""
    cm = np.asarray(confusion, dtype=float)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / cm.sum(axis=1)
        precision = tp / cm.sum(axis=0)
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), np.where(cm.sum(axis=1) > 0, 0.0, np.nan))
    return recall, f1


def _summed_confusion(runs: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray] | None:
    mats = [np.asarray(r["confusion"]) for r in runs if r.get("confusion")]
    if not mats or any(m.shape != mats[0].shape for m in mats):
        return None
    return list(runs[0].get("classes") or range(mats[0].shape[0])), np.sum(mats, axis=0)


def per_class_values(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{class: {figure: value}}`` of one key run over its seeds (see the module docstring)."""
    conf = _summed_confusion(runs)
    if conf is not None:
        classes, cm = conf
        recall, f1 = recall_f1(cm)
        return {str(c): {"recall": float(recall[i]), "F1": float(f1[i])} for i, c in enumerate(classes)}
    metric = runs[0].get("primary_metric", "")
    values: dict[str, list[float]] = {}
    for r in runs:
        for k, v in (r.get("metrics") or {}).items():
            if k.startswith(metric + "/") and v is not None:
                values.setdefault(k.split("/", 1)[1], []).append(float(v))
    return {c: {metric: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan} for c, v in values.items()}


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _label(enc: str, mode: str, frac: float, runs: Sequence[dict[str, Any]]) -> str:
    n = runs[0].get("n_train")
    return f"{enc} / {mode} / {100 * frac:g} %" + (f" (n={n})" if n is not None else "") + f", {len(runs)} seed(s)"


def _confusion_table(classes: list[str], cm: np.ndarray) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in classes)
    rows = "".join(f"<tr><th class='l'>{e(str(c))}</th>" + "".join(f"<td>{int(v)}</td>" for v in cm[i]) + "</tr>"
                   for i, c in enumerate(classes))
    return f"<table class='cm'><tr><th class='l'>true \\ predicted</th>{head}</tr>{rows}</table>"


def per_class_section(records: Sequence[dict[str, Any]], role: str | None, cfg: TransferConfig) -> str:
    """HTML: a per-class table of the key runs and, for classification, their confusion matrices."""
    runs = key_runs(records, role, cfg)
    if not runs:
        return ""
    e = html.escape
    values = [(enc, mode, frac, rs, per_class_values(rs)) for enc, mode, frac, rs in runs]
    classes = list(dict.fromkeys(c for *_, v in values for c in v))
    if not classes:
        return ""
    figures = list(dict.fromkeys(f for *_, v in values for c in v.values() for f in c))
    head = "".join(f"<th>{e(c)}<br><span class='small'>{e(' / '.join(figures))}</span></th>" for c in classes)
    body = "".join(
        f"<tr><td class='l'>{e(_label(enc, mode, frac, rs))}</td>"
        + "".join(f"<td>{' / '.join(_fmt(v.get(c, {}).get(f, math.nan)) for f in figures)}</td>" for c in classes)
        + "</tr>" for enc, mode, frac, rs, v in values)
    parts = ["<h3>Per-class results (key runs, test split)</h3><p class='small'>"
             + ("Recall and F1 per class from the confusion matrix summed over seeds."
                if "recall" in figures else "Per-label values of the primary metric, mean over seeds.")
             + f"</p><table><tr><th class='l'>run</th>{head}</tr>{body}</table>"]
    mats = [(enc, mode, frac, rs, _summed_confusion(rs)) for enc, mode, frac, rs in runs]
    mats = [m for m in mats if m[-1] is not None]
    if mats:
        parts.append("<h3>Confusion matrices (summed over seeds)</h3><div class='cms'>")
        for enc, mode, frac, rs, (cls, cm) in mats:
            parts.append(f"<div><p class='small'>{e(_label(enc, mode, frac, rs))}</p>{_confusion_table(cls, cm)}</div>")
        parts.append("</div>")
    return "".join(parts)
