"""Learn2Reg-style ranking of registration methods from their evaluation results.

For every metric of a task, every ordered pair of methods is compared with the Wilcoxon
rank-sum test (``scipy.stats.ranksums``, two-sided, ``p < alpha`` with alpha = 0.05) on the
pooled values: per (case, label) for Dice, DSC30 and HD95, per landmark for TRE and TRE30, per
case for SDlogJ and runtime. Lower-is-better metrics are negated first, so "significantly
better" always means a positive statistic with p < alpha. A method's metric score maps the
number of methods it significantly beats onto ``linspace(0.1, 1, N)`` (N methods), ties
averaged (the mean of the positions they share). The task score is the geometric mean of the
metric scores:

* label tasks: Dice, DSC30, HD95, SDlogJ, runtime;
* landmark tasks: TRE (counted twice), TRE30, SDlogJ, runtime;
* tasks with both (e.g. ThoraxCBCT): the union, TRE still counted twice.

Runtime enters only when at least one method reports runtimes. SDlogJ is the official figure
(``sdlogj_official``) unless ``sdlogj_key`` says otherwise.

Missing values (a pair that failed or is absent from a method's results) are filled so that
every method is compared on the same entries:

* Dice and DSC30: 0 for every label present in the pair;
* HD95: ``hd95_penalty`` of the results (the diagonal of the image in voxels, the largest
  distance possible) or ``hd95_penalty`` given here;
* TRE and TRE30: the initial TRE of the point (what no registration achieves);
* SDlogJ: the largest value any method reached on that pair (as bad as the worst);
* runtime: ``runtime_max_s`` (default 600 s, the documented maximum).

With several tasks, the overall score of a method is the mean of its task scores over the
tasks it was ranked in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import RegistrationError
from ..utils import atomic_path, atomic_write_text
from ..evaluation.directions import LOWER_IS_BETTER
from .metrics import HARD_FRACTION, RESULTS_FORMAT

__all__ = [
    "load_results",
    "significant_wins",
    "scores_from_wins",
    "metric_samples",
    "entry_pair_ids",
    "rank_task",
    "rank_results",
    "RankingTable",
    "LOWER_IS_BETTER",
    "RUNTIME_MAX_S",
    "ALPHA",
]

ALPHA = 0.05
RUNTIME_MAX_S = 600.0
LABEL_METRICS = ("dice", "dsc30", "hd95")
LANDMARK_METRICS = ("tre", "tre30")


def load_results(path: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read (or pass through) a results dict written by ``evaluate_fields``.

    Raises:
        RegistrationError: missing file, invalid JSON, or not a results file.
    """
    if isinstance(path, Mapping):
        data = dict(path)
        where = f"results of {data.get('method', '?')}"
    else:
        where = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise RegistrationError(f"{path}: results file not found") from err
        except json.JSONDecodeError as err:
            raise RegistrationError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise RegistrationError(f"{where}: [format] expected {RESULTS_FORMAT!r} (written by `medfoundry l2r evaluate`)")
    for key in ("method", "task", "cases"):
        if key not in data:
            raise RegistrationError(f"{where}: [{key}] missing")
    return data


def significant_wins(samples: Mapping[str, np.ndarray], higher_is_better: bool = True,
                     alpha: float = ALPHA) -> tuple[dict[str, int], np.ndarray]:
    """Number of methods each method beats with the Wilcoxon rank-sum test (p < ``alpha``).

    Args:
        samples: method -> pooled values of one metric.
        higher_is_better: ``False`` negates the values first.
        alpha: significance level.

    Returns:
        ``(wins, p_values)``: wins per method and the matrix of two-sided p-values (rows and
        columns in the order of ``samples``; NaN on the diagonal).
    """
    from scipy.stats import ranksums

    names = list(samples)
    sign = 1.0 if higher_is_better else -1.0
    values = {n: sign * np.asarray(samples[n], dtype=np.float64) for n in names}
    p = np.full((len(names), len(names)), np.nan)
    wins = {n: 0 for n in names}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j or values[a].size == 0 or values[b].size == 0:
                continue
            if np.array_equal(values[a], values[b]):
                p[i, j] = 1.0
                continue
            stat, pval = ranksums(values[a], values[b])
            p[i, j] = pval
            if pval < alpha and stat > 0:
                wins[a] += 1
    return wins, p


def scores_from_wins(wins: Mapping[str, int]) -> dict[str, float]:
    """Map win counts onto ``linspace(0.1, 1, N)`` by rank, ties sharing the mean of their slots."""
    from scipy.stats import rankdata

    names = list(wins)
    n = len(names)
    if n == 1:
        return {names[0]: 1.0}
    ranks = rankdata([wins[m] for m in names], method="average")
    return {m: float(0.1 + 0.9 * (r - 1) / (n - 1)) for m, r in zip(names, ranks)}


def _case_map(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["pair_id"]: c for c in results["cases"]}


def _label_entries(pair_ids: list[str], per_method: dict[str, dict[str, dict]]) -> list[tuple[str, str, float]]:
    """(pair, label, initial Dice) of every present label, from any method that has it."""
    out = []
    for pid in pair_ids:
        initial: dict[str, Any] = {}
        for cases in per_method.values():
            c = cases.get(pid)
            if c and c.get("dice_initial_per_label"):
                initial = c["dice_initial_per_label"]
                break
        for label, value in initial.items():
            if value is not None:
                out.append((pid, label, float(value)))
    return out


def _point_entries(pair_ids: list[str], per_method: dict[str, dict[str, dict]], key: str
                   ) -> list[tuple[str, int, float]]:
    out = []
    for pid in pair_ids:
        for cases in per_method.values():
            c = cases.get(pid)
            if c and c.get(f"{key}_initial_per_point"):
                out.extend((pid, i, float(v)) for i, v in enumerate(c[f"{key}_initial_per_point"]))
                break
    return out


def _hardest(entries: list[tuple[Any, Any, float]], hardest: str) -> list[tuple[Any, Any, float]]:
    if not entries:
        return []
    k = max(1, math.ceil(HARD_FRACTION * len(entries) - 1e-9))
    order = np.argsort([e[2] if hardest == "low" else -e[2] for e in entries], kind="stable")
    return [entries[i] for i in order[:k]]


def metric_samples(metric: str, per_method: dict[str, dict[str, dict]], pair_ids: list[str], *,
                   hd95_penalty: float, runtime_max_s: float = RUNTIME_MAX_S,
                   sdlogj_key: str = "sdlogj_official") -> dict[str, np.ndarray]:
    """Pooled values of ``metric`` for every method, missing entries filled (module docstring).

    Args:
        metric: ``dice``, ``dsc30``, ``hd95``, ``tre``, ``tre30``, ``sdlogj`` or ``runtime``.
        per_method: method -> {pair id -> case record}.
        pair_ids: the pairs compared (union over methods).
        hd95_penalty: HD95 of a missing label entry (voxels).
        runtime_max_s: runtime of a pair without one.
        sdlogj_key: which SDlogJ figure (``sdlogj_official`` or ``sdlogj``).
    """
    out: dict[str, np.ndarray] = {}
    if metric in ("dice", "dsc30", "hd95"):
        entries = _label_entries(pair_ids, per_method)
        if metric == "dsc30":
            entries = _hardest(entries, "low")
        key = "dice" if metric in ("dice", "dsc30") else "hd95"
        fill = 0.0 if key == "dice" else hd95_penalty
        for m, cases in per_method.items():
            vals = []
            for pid, label, _ in entries:
                c = cases.get(pid)
                v = None
                if c is not None and c.get("status") == "ok":
                    v = (c.get(f"{key}_per_label") or {}).get(label)
                vals.append(fill if v is None or not math.isfinite(v) else v)
            out[m] = np.asarray(vals, dtype=np.float64)
        return out
    if metric in ("tre", "tre30"):
        key = _tre_key(per_method)
        entries = _point_entries(pair_ids, per_method, key)
        if metric == "tre30":
            entries = _hardest(entries, "high")
        for m, cases in per_method.items():
            vals = []
            for pid, i, initial in entries:
                c = cases.get(pid)
                per_point = c.get(f"{key}_per_point") if c is not None and c.get("status") == "ok" else None
                vals.append(per_point[i] if per_point else initial)
            out[m] = np.asarray(vals, dtype=np.float64)
        return out
    if metric == "sdlogj":
        worst = {}
        for pid in pair_ids:
            seen = [c[sdlogj_key] for cases in per_method.values() if (c := cases.get(pid)) is not None
                    and c.get("status") == "ok" and c.get(sdlogj_key) is not None]
            worst[pid] = max(seen) if seen else 0.0
        for m, cases in per_method.items():
            vals = []
            for pid in pair_ids:
                c = cases.get(pid)
                v = c.get(sdlogj_key) if c is not None and c.get("status") == "ok" else None
                vals.append(worst[pid] if v is None else v)
            out[m] = np.asarray(vals, dtype=np.float64)
        return out
    if metric == "runtime":
        for m, cases in per_method.items():
            vals = []
            for pid in pair_ids:
                c = cases.get(pid)
                v = c.get("runtime_s") if c is not None and c.get("status") == "ok" else None
                vals.append(runtime_max_s if v is None else min(float(v), runtime_max_s))
            out[m] = np.asarray(vals, dtype=np.float64)
        return out
    raise RegistrationError(f"ranking: unknown metric {metric!r}")


def entry_pair_ids(metric: str, per_method: dict[str, dict[str, dict]], pair_ids: list[str]) -> list[str]:
    """The pair id of each entry :func:`metric_samples` returns for ``metric``, in its order."""
    if metric in ("dice", "dsc30", "hd95"):
        entries = _label_entries(pair_ids, per_method)
        return [e[0] for e in (_hardest(entries, "low") if metric == "dsc30" else entries)]
    if metric in ("tre", "tre30"):
        entries = _point_entries(pair_ids, per_method, _tre_key(per_method))
        return [e[0] for e in (_hardest(entries, "high") if metric == "tre30" else entries)]
    return list(pair_ids)


def _per_pair_means(values: np.ndarray, groups: list[str]) -> np.ndarray:
    order = list(dict.fromkeys(groups))
    index = np.array([order.index(g) for g in groups], dtype=np.int64)
    return np.bincount(index, weights=values, minlength=len(order)) / np.bincount(index, minlength=len(order))


def _tre_key(per_method: dict[str, dict[str, dict]]) -> str:
    for cases in per_method.values():
        for c in cases.values():
            if c.get("tre_lm_initial_per_point") is not None:
                return "tre_lm"
    return "tre_kp"


@dataclass
class RankingTable:
    """Ranking of methods per task.

    Attributes:
        rows: one dict per (task, method): ``task``, ``method``, ``rank``, ``task_score``,
            ``score_<metric>``, ``mean_<metric>`` (mean of the pooled filled values), ``wins_<metric>``.
        metrics: task -> the metrics ranked, in order (TRE listed once; it weighs twice).
        overall: method -> mean task score (only with several tasks).
        p_values: task -> metric -> {"methods": [...], "p": matrix as lists}.
        paired: task -> metric -> one entry per pair of methods (``a``, ``b``, ``mean_diff`` =
            mean over registration pairs of a - b, each pair's value the mean of its filled
            entries; its 95 % bootstrap interval ``low`` and ``high``, the sign-flip permutation
            ``p`` and ``n`` registration pairs), from
            :func:`medfoundry.evaluation.stats.paired_difference`. The ranking's own test pools
            entries unpaired, as the challenge does; this says by how much two methods differ.
    """

    rows: list[dict[str, Any]]
    metrics: dict[str, list[str]]
    overall: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def columns(self) -> list[str]:
        cols = ["task", "method", "rank", "task_score"]
        seen = []
        for mets in self.metrics.values():
            for m in mets:
                if m not in seen:
                    seen.append(m)
        cols += [f"score_{m}" for m in seen] + [f"mean_{m}" for m in seen] + [f"wins_{m}" for m in seen]
        return cols

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV text (one row per task and method); written atomically when ``path`` is given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "metrics": self.metrics, "overall": self.overall, "p_values": self.p_values,
                "paired": self.paired}

    def to_rich(self):
        """A ``rich.table.Table`` per task (returned as a ``rich.console.Group``)."""
        from rich.console import Group
        from rich.table import Table

        tables = []
        for task, mets in self.metrics.items():
            table = Table(title=f"{task}: Learn2Reg ranking (Wilcoxon rank-sum, p < {ALPHA})")
            table.add_column("rank", justify="right")
            table.add_column("method")
            table.add_column("score", justify="right")
            for m in mets:
                table.add_column(f"{m}\nmean (score)", justify="right")
            for row in sorted((r for r in self.rows if r["task"] == task), key=lambda r: r["rank"]):
                cells = [f"{row['rank']:g}", row["method"], f"{row['task_score']:.3f}"]
                for m in mets:
                    cells.append(f"{row[f'mean_{m}']:.4g} ({row[f'score_{m}']:.2f})")
                table.add_row(*cells)
            tables.append(table)
        if self.overall:
            table = Table(title="overall (mean of task scores)")
            table.add_column("method")
            table.add_column("score", justify="right")
            for name, score in sorted(self.overall.items(), key=lambda kv: -kv[1]):
                table.add_row(name, f"{score:.3f}")
            tables.append(table)
        return Group(*tables)

    def to_markdown(self) -> str:
        """The ranking as Markdown tables (for reports and docs)."""
        lines = []
        for task, mets in self.metrics.items():
            lines.append(f"**{task}**\n")
            header = ["rank", "method", "score"] + [f"{m} mean (score)" for m in mets]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            for row in sorted((r for r in self.rows if r["task"] == task), key=lambda r: r["rank"]):
                cells = [f"{row['rank']:g}", row["method"], f"{row['task_score']:.3f}"]
                cells += [f"{row[f'mean_{m}']:.4g} ({row[f'score_{m}']:.2f})" for m in mets]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            if self.paired.get(task):
                lines.append(f"Paired differences (a - b on the same registration pairs, 95 % CI, sign-flip p), "
                             f"{task}:\n")
                lines.append("| metric | a | b | mean a - b | 95 % CI | p | n |")
                lines.append("|---|---|---|---|---|---|---|")
                for metric, entries in self.paired[task].items():
                    for e in entries:
                        lines.append(f"| {metric} | {e['a']} | {e['b']} | {e['mean_diff']:.4g} | "
                                     f"[{e['low']:.4g}, {e['high']:.4g}] | {e['p']:.3g} | {e['n']} |")
                lines.append("")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Bar chart of the metric scores and task score of every method (PNG, matplotlib Agg)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        tasks = list(self.metrics)
        fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.0, 2.0 + 1.6 * max(len(m) for m in self.metrics.values()))
                                                         * len(tasks), 4.0), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            rows = sorted((r for r in self.rows if r["task"] == task), key=lambda r: r["rank"])
            mets = self.metrics[task] + ["task_score"]
            width = 0.8 / max(1, len(rows))
            x = np.arange(len(mets))
            for i, row in enumerate(rows):
                vals = [row[f"score_{m}"] if m != "task_score" else row["task_score"] for m in mets]
                ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=f"{row['rank']:g}. {row['method']}")
            ax.set_xticks(x)
            ax.set_xticklabels(mets, rotation=30, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("score (0.1 worst ... 1 best)")
            ax.set_title(task)
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return path


def rank_task(results: Sequence[dict[str, Any]], *, alpha: float = ALPHA, runtime_max_s: float = RUNTIME_MAX_S,
              hd95_penalty: float | None = None, sdlogj_key: str = "sdlogj_official"
              ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Rank the methods of one task; returns (rows, metrics, p-values, paired differences).

    See the module docstring and :class:`RankingTable`.
    """
    from ..evaluation.stats import paired_difference

    names = [r["method"] for r in results]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RegistrationError(f"ranking task {results[0]['task']}: method name(s) {', '.join(dup)} appear twice; "
                                "pass --method-name when evaluating")
    per_method = {r["method"]: _case_map(r) for r in results}
    pair_ids: list[str] = []
    for r in results:
        for c in r["cases"]:
            if c["pair_id"] not in pair_ids:
                pair_ids.append(c["pair_id"])
    has_labels = any(c.get("dice_initial_per_label") for cases in per_method.values() for c in cases.values())
    has_hd95 = any(c.get("hd95_per_label") for cases in per_method.values() for c in cases.values())
    has_points = any(c.get("tre_lm_initial_per_point") or c.get("tre_kp_initial_per_point")
                     for cases in per_method.values() for c in cases.values())
    has_runtime = any(c.get("runtime_s") is not None for cases in per_method.values() for c in cases.values())
    metrics: list[str] = []
    if has_labels:
        metrics += ["dice", "dsc30"] + (["hd95"] if has_hd95 else [])
    if has_points:
        metrics += ["tre", "tre30"]
    metrics.append("sdlogj")
    if has_runtime:
        metrics.append("runtime")
    if hd95_penalty is None:
        penalties = [r.get("hd95_penalty") for r in results if r.get("hd95_penalty") is not None]
        hd95_penalty = float(max(penalties)) if penalties else 1000.0
    rows = {n: {"task": results[0]["task"], "method": n} for n in names}
    p_values: dict[str, Any] = {}
    paired: dict[str, list[dict[str, Any]]] = {}
    log_sum = {n: 0.0 for n in names}
    weight_sum = 0.0
    for metric in metrics:
        samples = metric_samples(metric, per_method, pair_ids, hd95_penalty=hd95_penalty,
                                 runtime_max_s=runtime_max_s, sdlogj_key=sdlogj_key)
        wins, p = significant_wins(samples, higher_is_better=metric not in LOWER_IS_BETTER, alpha=alpha)
        scores = scores_from_wins(wins)
        weight = 2.0 if metric == "tre" else 1.0
        weight_sum += weight
        p_values[metric] = {"methods": names, "p": [[None if math.isnan(v) else float(v) for v in row] for row in p]}
        paired[metric] = []
        # Pairs, not (pair, label) or landmark entries, are the independent units of the comparison.
        groups = entry_pair_ids(metric, per_method, pair_ids)
        per_pair = {n: _per_pair_means(samples[n], groups) for n in names} if groups else {}
        for i, a in enumerate(names if groups else []):
            for b in names[i + 1:]:
                d = paired_difference(per_pair[a], per_pair[b])
                paired[metric].append({"a": a, "b": b, "mean_diff": d.difference, "low": d.low, "high": d.high,
                                       "p": d.p_value, "n": d.n})
        for n in names:
            rows[n][f"score_{metric}"] = scores[n]
            rows[n][f"wins_{metric}"] = wins[n]
            rows[n][f"mean_{metric}"] = float(np.mean(samples[n])) if samples[n].size else float("nan")
            log_sum[n] += weight * math.log(scores[n])
    for n in names:
        rows[n]["task_score"] = math.exp(log_sum[n] / weight_sum)
    from scipy.stats import rankdata

    ranks = rankdata([-rows[n]["task_score"] for n in names], method="min")
    for n, r in zip(names, ranks):
        rows[n]["rank"] = float(r)
    return sorted(rows.values(), key=lambda r: r["rank"]), metrics, p_values, paired


def rank_results(results: Sequence[str | Path | Mapping[str, Any]], *, alpha: float = ALPHA,
                 runtime_max_s: float = RUNTIME_MAX_S, hd95_penalty: float | None = None,
                 sdlogj_key: str = "sdlogj_official") -> RankingTable:
    """Rank methods from their results (paths or dicts from ``evaluate_fields``), per task.

    Args:
        results: one results file or dict per method and task.
        alpha: significance level of the rank-sum tests.
        runtime_max_s: runtime of pairs without one (and the cap of reported runtimes).
        hd95_penalty: HD95 (voxels) of missing entries; default the results' ``hd95_penalty``.
        sdlogj_key: ``sdlogj_official`` (the challenge) or ``sdlogj`` (std of log J over J > 0).

    Returns:
        A :class:`RankingTable`.

    Raises:
        RegistrationError: unreadable results, or the same method twice in one task.
    """
    loaded = [load_results(r) for r in results]
    if not loaded:
        raise RegistrationError("rank_results: no results given")
    if sdlogj_key not in ("sdlogj_official", "sdlogj"):
        raise RegistrationError(f"rank_results: sdlogj_key must be 'sdlogj_official' or 'sdlogj', got {sdlogj_key!r}")
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in loaded:
        by_task.setdefault(str(r["task"]), []).append(r)
    rows: list[dict[str, Any]] = []
    metrics: dict[str, list[str]] = {}
    p_values: dict[str, Any] = {}
    paired: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task, group in by_task.items():
        task_rows, task_metrics, task_p, task_paired = rank_task(
            group, alpha=alpha, runtime_max_s=runtime_max_s, hd95_penalty=hd95_penalty, sdlogj_key=sdlogj_key)
        rows += task_rows
        metrics[task] = task_metrics
        p_values[task] = task_p
        paired[task] = task_paired
    overall: dict[str, float] = {}
    if len(by_task) > 1:
        scores: dict[str, list[float]] = {}
        for row in rows:
            scores.setdefault(row["method"], []).append(row["task_score"])
        overall = {m: float(np.mean(s)) for m, s in scores.items()}
    return RankingTable(rows=rows, metrics=metrics, overall=overall, p_values=p_values, paired=paired)
