"""Scoring of a shift benchmark: paired changes against ``none``, the goal verdicts, a table, a plot.

Shared by ``benchmarks/shift_heads.py`` (2D heads) and ``benchmarks/shift.py`` (3D volumes), so
both judge issue 11's goals with the same rules. Inputs per method and condition (``IN_DIST`` or
``<corruption>_s<severity>``): the score on the whole test set (``points``) and its replicates on
case resamples shared by every method and condition (``reps``): the shifted sets hold the same
cases in the same order, so every comparison is paired case by case.

Goals, per task: at the middle severity, averaged over corruptions, the recovered fraction
``mean_c(method - none) / mean_c(none in-distribution - none)`` with its interval (the same
resamples in numerator and denominator), for each method and the best; in distribution the change
against ``none`` (goal: |change| <= 0.01); a method whose paired interval lies below 0 on a
condition is listed as hurting there.

numpy only; :func:`plot` imports matplotlib when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IN_DIST = "in-distribution"


def percentile_ci(reps: np.ndarray) -> list[float]:
    """95 % percentile interval of the finite replicates (``[nan, nan]`` when there are none)."""
    reps = np.asarray(reps, dtype=float)
    finite = reps[np.isfinite(reps)]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if finite.size else [np.nan] * 2


def per_case_replicates(values: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """Replicates of a mean of per-case scores on shared resamples ``(B, n)`` of case indices."""
    return np.asarray(values, dtype=float)[np.asarray(resamples)].mean(axis=1)


def add_paired_changes(rows: dict[str, dict[str, dict]], points: dict[str, dict[str, float]],
                       reps: dict[str, dict[str, np.ndarray]]) -> None:
    """Write ``rows[method][condition]["vs_none"]``: the paired change against ``none`` and its interval."""
    from ..evaluation.stats import paired_bootstrap_difference

    for method, conds in rows.items():
        for cond, row in conds.items():
            d = paired_bootstrap_difference([points[method][cond]], reps[method][cond][None],
                                            [points["none"][cond]], reps["none"][cond][None])
            row["vs_none"] = {"difference": d.difference, "ci": [d.low, d.high], "p_value": d.p_value}


def recovery_verdicts(points: dict, reps: dict, rows: dict, corruptions: list[str], severities: list[int],
                      methods: list[str]) -> dict[str, Any]:
    """The goal verdicts of one task (module docstring); ``rows`` must hold the paired changes."""
    middle = severities[len(severities) // 2]
    shifted = [f"{c}_s{middle}" for c in corruptions]
    none_p, none_r = points["none"], reps["none"]
    lost = float(np.mean([none_p[IN_DIST] - none_p[c] for c in shifted]))
    lost_r = np.mean([none_r[IN_DIST] - none_r[c] for c in shifted], axis=0)
    lost_ci = percentile_ci(lost_r)
    lines = [f"none: the shift costs {lost:.3f} [{lost_ci[0]:.3f}, {lost_ci[1]:.3f}] at severity {middle} (mean over "
             f"{len(shifted)} corruptions, in-distribution {none_p[IN_DIST]:.3f})"]
    if not lost_ci[0] > 0:
        lines.append("  the loss's interval reaches 0: recovered fractions divide by noise and mean little here")
    recovered: dict[str, Any] = {}
    for method in methods:
        if method == "none":
            continue
        gain = float(np.mean([points[method][c] - none_p[c] for c in shifted]))
        gain_r = np.mean([reps[method][c] - none_r[c] for c in shifted], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = gain / lost if lost > 0 else float("nan")
            frac_r = np.where(lost_r > 0, gain_r / lost_r, np.nan)
        change = rows[method][IN_DIST]["vs_none"]
        hurts = [c for c, r in rows[method].items() if r["vs_none"]["ci"][1] < 0]
        helps = [c for c, r in rows[method].items() if r["vs_none"]["ci"][0] > 0]
        recovered[method] = {"fraction": frac, "ci": percentile_ci(frac_r) if lost > 0 else [np.nan, np.nan],
                             "gain": gain, "in_distribution_change": change["difference"],
                             "in_distribution_change_ci": change["ci"],
                             "in_distribution_ok": abs(change["difference"]) <= 0.01,
                             "hurts_on": hurts, "helps_on": helps}
        share = (f"recovers {100 * frac:.0f} % [{100 * recovered[method]['ci'][0]:.0f}, "
                 f"{100 * recovered[method]['ci'][1]:.0f}] of the loss" if lost > 0 else
                 f"changes the shifted score by {gain:+.3f} (no loss to recover)")
        lines.append(f"{method}: {share}; in-distribution change {change['difference']:+.3f} "
                     f"[{change['ci'][0]:+.3f}, {change['ci'][1]:+.3f}] "
                     f"({'ok' if recovered[method]['in_distribution_ok'] else 'NOT met'}, goal |change| <= 0.01)")
        if hurts:
            lines.append(f"  {method} HURTS (paired interval below 0) on: {', '.join(hurts)}")
        if "members" in rows[method][IN_DIST]:
            own = {c: float(np.mean(rows[method][c]["members"])) for c in [IN_DIST, *shifted]}
            recovered[method]["members_mean"] = own
            lines.append(f"  {method}: its members score {own[IN_DIST]:.3f} on average in distribution and "
                         f"{np.mean([own[c] for c in shifted]):.3f} at severity {middle} (the ensemble: "
                         f"{points[method][IN_DIST]:.3f}, {np.mean([points[method][c] for c in shifted]):.3f}; "
                         f"'none' is the first member)")
    finite = {k: v["fraction"] for k, v in recovered.items() if np.isfinite(v["fraction"])}
    best = max(finite, key=lambda k: finite[k]) if finite else None
    if best is not None:
        lo = recovered[best]["ci"][0]
        lines.append(f"goal (best method recovers >= 50 % at severity {middle}): {best} {100 * finite[best]:.0f} % "
                     f"(interval from {100 * lo:.0f} %) -> {'met' if finite[best] >= 0.5 else 'NOT met'}")
    return {"middle": middle, "lost": lost, "lost_ci": lost_ci, "significant_loss": bool(lost_ci[0] > 0),
            "recovered": recovered, "best": best, "lines": lines}


def markdown(report: dict[str, Any]) -> str:
    """Per task: the middle-severity table (score, paired change against none) and the verdicts."""
    methods = report["methods"]
    parts = []
    for task, t in report["tasks"].items():
        res, v = t["results"], t["verdicts"]
        middle = v["middle"]
        parts.append(f"### {task} ({t['metric']}, test split, n = {t['n']})\n")
        parts.append("| condition | " + " | ".join(methods) + " |")
        parts.append("|---" * (len(methods) + 1) + "|")
        for cond in [IN_DIST] + [f"{c}_s{middle}" for c in t["corruptions"]]:
            cells = []
            for m in methods:
                r = res[m][cond]
                if m == "none":
                    cells.append(f"{r['score']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]")
                else:
                    d = r["vs_none"]
                    mark = ", hurts" if d["ci"][1] < 0 else (", helps" if d["ci"][0] > 0 else "")
                    cells.append(f"{r['score']:.3f} ({d['difference']:+.3f}{mark})")
            parts.append(f"| {cond.replace('_s', ', ')} | " + " | ".join(cells) + " |")
        for s in report["severities"]:
            keys = [f"{c}_s{s}" for c in t["corruptions"]]
            means = [np.mean([res[m][k]["score"] for k in keys]) for m in methods]
            parts.append(f"| mean, severity {s} | " + " | ".join(f"{x:.3f}" for x in means) + " |")
        ece = [res[m][IN_DIST].get("ece") for m in methods]
        parts.append("| ECE in-distribution | " + " | ".join("-" if e is None or not np.isfinite(e) else f"{e:.3f}"
                                                           for e in ece) + " |")
        secs = [np.mean([r["seconds_per_case"] for r in res[m].values()]) for m in methods]
        parts.append("| s / case | " + " | ".join(f"{x:.4f}" for x in secs) + " |")
        parts.append("")
        parts.extend(f"- {line}" for line in v["lines"])
        parts.append("")
    return "\n".join(parts) + "\n"


def plot(report: dict[str, Any], target: Path) -> None:
    """Score vs severity per method: one row per task, one column per corruption (PNG + SVG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    cols = max(len(report["tasks"][t]["corruptions"]) for t in tasks)
    sev = report["severities"]
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.3 * cols + 1.2, 2.4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        t = report["tasks"][task]
        for ax in row[len(t["corruptions"]):]:
            ax.axis("off")
        for ax, c in zip(row, t["corruptions"]):
            for m in report["methods"]:
                res = t["results"][m]
                ys = [res[IN_DIST]["score"]] + [res[f"{c}_s{s}"]["score"] for s in sev]
                ax.plot([0, *sev], ys, marker="o", markersize=3, label=m)
            ax.set_title(f"{task}: {c}", fontsize=7)
            ax.set_xticks([0, *sev])
            ax.tick_params(labelsize=6)
        row[0].set_ylabel(t["metric"].replace("_", " "), fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("severity (0: in distribution)", fontsize=6)
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / (2.3 * cols + 1.2), 1))
    target = Path(target)
    for suffix in (".png", ".svg"):
        final = target.with_suffix(suffix)
        tmp = final.with_name(final.stem + ".tmp" + suffix)
        fig.savefig(tmp, dpi=120)
        tmp.replace(final)
    plt.close(fig)
