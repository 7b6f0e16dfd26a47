"""Self-contained HTML report of a transfer sweep (plots embedded as base64 PNG).

The report answers, per downstream task, the data-efficiency question: at which fraction of
the training data does a pretrained encoder reach the score the **random-init baseline
(fine-tuned, 100 % of the training data)** reaches, and it checks two goals plainly:

* **Goal A** (in-domain tasks, ``TaskSpec.extra["role"] == "in-domain"``): the *frozen*
  multi-task encoder trained on 1 % of the data scores >= 95 % of the random-init baseline
  at 100 %.
* **Goal B** (out-of-domain tasks, ``role == "out-of-domain"``): the multi-task pretrained
  encoder (best of its modes) at 50 % of the data scores >= the random-init baseline at 100 %.

The figures (1 %, 95 %, 50 %) are the defaults of ``TransferConfig.goal_*``; a report uses
those recorded in the sweep's ``config.json``.

A verdict compares means over seeds (all on the test split); the table beside it gives the
95 % bootstrap CI (seeds x test cases, see :mod:`medfoundry.evaluation.stats`) so a reader
can see whether the verdict is robust. A verdict whose runs are missing says so instead of
guessing. Each task also lists paired comparisons (:func:`paired_comparisons`): every
pretrained encoder against random init, and every multi-task encoder against every
single-task one, at the same mode and fraction on the seeds both ran.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, MedfoundryError
from ..evaluation.directions import higher_is_better
from ..evaluation.stats import PairedDifference, mean_ci, paired_seed_difference, seed_case_ci
from ..transfer.config import TransferConfig
from ..transfer.results import RESULTS_JSON, ResultStore
from ..utils import atomic_write_text
from .plots import Curve, efficiency_plot

__all__ = ["build_report", "summarise", "goal_verdicts", "paired_comparisons", "Summary", "Verdict", "Comparison"]

REPORT_NAME = "report.html"


@dataclass
class Point:
    """Mean over seeds of the primary test metric at one fraction, with its bootstrap CI."""

    mean: float
    low: float
    high: float
    seeds: int
    still_improving: int = 0  # seeds whose best validation came at the last step (budget ran out)
    max_steps: int = 0
    # Per-run figures, sorted by seed, kept for paired comparisons (replicates None when absent).
    seed_ids: tuple[int, ...] = field(default=(), repr=False, compare=False)
    values: np.ndarray | None = field(default=None, repr=False, compare=False)
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Summary:
    """Aggregated results of one task."""

    task: str
    kind: str
    role: str | None
    group: str | None
    metric: str
    chance: float | None
    # (encoder, mode) -> fraction -> Point
    curves: dict[tuple[str, str], dict[float, Point]] = field(default_factory=dict)
    encoder_kind: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> Point | None:
        """Random-init, fine-tuned, 100 % of the training data."""
        for (enc, mode), pts in self.curves.items():
            if self.encoder_kind.get(enc) == "random" and mode == "finetune" and 1.0 in pts:
                return pts[1.0]
        return None

    def smallest_fraction(self, encoder: str, mode: str, target: float) -> float | None:
        pts = self.curves.get((encoder, mode), {})
        hits = [f for f, p in sorted(pts.items()) if math.isfinite(p.mean) and p.mean >= target]
        return hits[0] if hits else None


@dataclass
class Verdict:
    goal: str
    task: str
    encoder: str
    status: str  # "MET" | "NOT MET" | "NOT EVALUATED"
    text: str


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def summarise(records: list[dict[str, Any]], level: float = 0.95) -> dict[str, Summary]:
    """Group ``status == "ok"`` records by task, (encoder, mode) and fraction; CI over seeds x cases."""
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = {}
    out: dict[str, Summary] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        task = r["task"]
        if task not in out:
            out[task] = Summary(task=task, kind=r.get("kind", "?"), role=r.get("role"), group=r.get("group"),
                                metric=r.get("primary_metric", "primary"), chance=r.get("chance"))
        out[task].encoder_kind[r["encoder"]] = r.get("encoder_kind", "weights")
        groups.setdefault((task, r["encoder"], r["mode"], float(r["fraction"])), []).append(r)
    for (task, enc, mode, frac), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        point = np.array([np.nan if r.get("primary") is None else r["primary"] for r in runs], dtype=float)
        reps = [r.get("bootstrap") or [] for r in runs]
        arr = None
        if reps and all(len(x) == len(reps[0]) and len(x) > 0 for x in reps):
            arr = np.array([[np.nan if v is None else v for v in x] for x in reps], dtype=float)
            mean, lo, hi = seed_case_ci(point, arr, level=level)
        else:
            mean, lo, hi = mean_ci(point, level=level) if np.isfinite(point).any() else (np.nan,) * 3
        improving = sum(1 for r in runs if r.get("steps") and r.get("best_step") == r.get("steps"))
        steps = max((int(r.get("steps") or 0) for r in runs), default=0)
        out[task].curves.setdefault((enc, mode), {})[frac] = Point(
            mean, lo, hi, len(runs), improving, steps, tuple(int(r["seed"]) for r in runs), point, arr)
    return out


def _multitask_encoders(s: Summary) -> tuple[list[str], str]:
    multi = [e for e, k in s.encoder_kind.items() if k == "multi-task"]
    if multi:
        return multi, ""
    other = [e for e, k in s.encoder_kind.items() if k not in ("random", "single-task")]
    return other, " (no encoder is marked multi-task; using the pretrained encoders given)"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def goal_verdicts(summaries: dict[str, Summary], config: TransferConfig | None = None) -> list[Verdict]:
    """Goal A and Goal B verdicts, one per (task, multi-task encoder) of the matching role.

    ``config`` supplies the goals' fractions and ratio (default: ``TransferConfig()``'s).
    """
    cfg = config or TransferConfig()
    a_fraction, a_ratio = cfg.goal_in_domain_fraction, cfg.goal_in_domain_ratio
    b_fraction = cfg.goal_out_of_domain_fraction
    out: list[Verdict] = []
    for task, s in summaries.items():
        if s.role not in ("in-domain", "out-of-domain"):
            continue
        goal = "A" if s.role == "in-domain" else "B"
        ref = s.reference
        encoders, note = _multitask_encoders(s)
        if ref is None or not math.isfinite(ref.mean):
            out.append(Verdict(goal, task, "-", "NOT EVALUATED",
                               f"no random-init fine-tuned run at 100 % of the data for {task}"))
            continue
        if not encoders:
            out.append(Verdict(goal, task, "-", "NOT EVALUATED", f"no pretrained encoder was run on {task}"))
            continue
        for enc in encoders:
            if goal == "A":
                threshold = a_ratio * ref.mean
                pts = s.curves.get((enc, "frozen"), {})
                p = next((v for f, v in pts.items() if _close(f, a_fraction)), None)
                what = f"frozen {enc} at {100 * a_fraction:g} %"
                need = f">= {100 * a_ratio:g} % of random-init at 100 % ({_fmt(ref.mean)}) = {_fmt(threshold)}"
            else:
                threshold = ref.mean
                cands = [(mode, v) for (e, mode), pts in s.curves.items() if e == enc
                         for f, v in pts.items() if _close(f, b_fraction)]
                cands = [(m, v) for m, v in cands if math.isfinite(v.mean)]
                mode, p = max(cands, key=lambda mv: mv[1].mean) if cands else ("-", None)
                what = f"{enc} ({mode}) at {100 * b_fraction:g} %" if p is not None else enc
                need = f">= random-init at 100 % = {_fmt(threshold)}"
            if p is None or not math.isfinite(p.mean):
                ran = sorted({f for (e, _), pts in s.curves.items() if e == enc for f in pts})
                frac = a_fraction if goal == "A" else b_fraction
                mode_txt = "frozen " if goal == "A" else ""
                out.append(Verdict(goal, task, enc, "NOT EVALUATED",
                                   f"no {mode_txt}run of {enc} at {100 * frac:g} % (fractions run: "
                                   f"{', '.join(f'{100 * f:g} %' for f in ran) or 'none'}); add {frac:g} to "
                                   f"--fractions{note}"))
                continue
            met = p.mean >= threshold
            robust = (p.low >= threshold) if met else (p.high < threshold)
            ci = f"95 % CI [{_fmt(p.low)}, {_fmt(p.high)}]"
            tail = "the CI lies entirely on this side" if robust else "the CI straddles the threshold"
            if s.chance is not None and math.isfinite(ref.low) and ref.low <= s.chance:
                tail += (f"; caution: the random-init baseline is not distinguishable from chance "
                         f"({_fmt(s.chance)}), so this comparison says little")
            out.append(Verdict(goal, task, enc, "MET" if met else "NOT MET",
                               f"{what}: {s.metric} {_fmt(p.mean)} ({ci}) vs. needed {need}; {tail}{note}"))
    return out


@dataclass
class Comparison:
    """Paired difference ``encoder - baseline`` at one mode and fraction, on their common seeds."""

    task: str
    encoder: str
    baseline: str
    mode: str
    fraction: float
    result: PairedDifference
    verdict: str  # "better" | "worse" | "no clear difference" (the CI holds 0) | "not comparable"


def _baselines(s: Summary, encoder: str) -> list[str]:
    """Random-init for every pretrained encoder; also every single-task one for a multi-task one."""
    kind = s.encoder_kind.get(encoder)
    if kind == "random":
        return []
    out = [e for e, k in sorted(s.encoder_kind.items()) if k == "random"]
    if kind == "multi-task":
        out += [e for e, k in sorted(s.encoder_kind.items()) if k == "single-task"]
    return out


def paired_comparisons(s: Summary, level: float = 0.95) -> list[Comparison]:
    """Each pretrained encoder against random init, and each multi-task against each single-task one.

    Pairs are formed at the same mode and fraction, on the seeds both curves have; with stored
    case replicates the CI covers seeds x test cases (the replicates share their case resamples),
    else only the seeds (:func:`medfoundry.evaluation.stats.paired_seed_difference`). The
    verdict follows the metric's direction and needs the CI of the difference to exclude 0.
    """
    higher = higher_is_better(s.metric)
    out = []
    for (enc, mode), pts in sorted(s.curves.items()):
        for base in _baselines(s, enc):
            other = s.curves.get((base, mode), {})
            for frac, p in sorted(pts.items()):
                q = next((v for f, v in other.items() if _close(f, frac)), None)
                if q is None:
                    continue
                res = paired_seed_difference(p.seed_ids, p.values, p.replicates, q.seed_ids, q.values,
                                             q.replicates, level=level)
                if res.n == 0 or not math.isfinite(res.difference):
                    verdict = "not comparable"
                elif res.low > 0 or res.high < 0:
                    verdict = "better" if (res.low > 0) == higher else "worse"
                else:
                    verdict = "no clear difference"
                out.append(Comparison(s.task, enc, base, mode, frac, res, verdict))
    return out


def _comparison_table(s: Summary) -> str:
    rows = paired_comparisons(s)
    if not rows:
        return ""
    e = html.escape
    body = "".join(
        f"<tr><td class='l'>{e(c.encoder)}</td><td class='l'>{e(c.baseline)}</td><td class='l'>{e(c.mode)}</td>"
        f"<td>{100 * c.fraction:g} %</td><td>{_fmt(c.result.difference)} [{_fmt(c.result.low)}, "
        f"{_fmt(c.result.high)}]</td><td>{_fmt(c.result.p_value)}</td>"
        f"<td class='l {_status_class({'better': 'MET', 'worse': 'NOT MET'}.get(c.verdict, ''))}'>{e(c.verdict)}</td></tr>"
        for c in rows)
    return ("<h3>Paired comparisons</h3><p class='small'>&Delta; = encoder - baseline on the seeds both ran "
            "(and the same bootstrap resamples of the test cases), 95 % CI and two-sided p-value; "
            "&quot;better&quot; or &quot;worse&quot; only when the CI excludes 0 (the metric's direction "
            "taken into account).</p><table><tr><th class='l'>encoder</th><th class='l'>baseline</th>"
            f"<th class='l'>mode</th><th>fraction</th><th>&Delta; [95 % CI]</th><th>p</th>"
            f"<th class='l'>verdict</th></tr>{body}</table>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.met{color:#0a7a2f;font-weight:600}.notmet{color:#b00020;font-weight:600}
.na{color:#8a6d00;font-weight:600}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
img{max-width:100%;border:1px solid #eee}.small{color:#666;font-size:.85em}
"""


def _status_class(status: str) -> str:
    return {"MET": "met", "NOT MET": "notmet"}.get(status, "na")


def _load_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _sweep_config(doc: Any) -> TransferConfig:
    """The goals of the sweep that wrote ``config.json`` (defaults when absent or unreadable)."""
    fields = doc.get("transfer") if isinstance(doc, dict) else None
    if not isinstance(fields, dict):
        return TransferConfig()
    known = set(TransferConfig.field_names())
    try:
        return TransferConfig.from_dict({k: v for k, v in fields.items() if k in known}, source="config.json")
    except MedfoundryError:
        return TransferConfig()


def _goal_section(verdicts: list[Verdict], cfg: TransferConfig) -> str:
    a_fraction, a_ratio = cfg.goal_in_domain_fraction, cfg.goal_in_domain_ratio
    b_fraction = cfg.goal_out_of_domain_fraction
    e = html.escape
    parts = ["<h2>Goals</h2>",
             f"<p class='small'>Goal A: on in-domain downstream tasks, the frozen multi-task encoder at "
             f"{100 * a_fraction:g} % of the training data reaches >= {100 * a_ratio:g} % of the "
             f"random-init (fine-tuned) score at 100 %. Goal B: on out-of-domain tasks, the multi-task "
             f"encoder at {100 * b_fraction:g} % reaches the random-init score at 100 %. "
             f"All numbers are test-split means over seeds.</p>"]
    for goal, name in (("A", "Goal A (in-domain)"), ("B", "Goal B (out-of-domain)")):
        vs = [v for v in verdicts if v.goal == goal]
        if not vs:
            parts.append(f"<p><b>{name}: NOT EVALUATED</b> - no downstream task with role "
                         f"{'in-domain' if goal == 'A' else 'out-of-domain'} in these results.</p>")
            continue
        met = sum(v.status == "MET" for v in vs)
        evaluated = sum(v.status != "NOT EVALUATED" for v in vs)
        if evaluated == 0:
            overall = "NOT EVALUATED"
        elif met == len(vs):
            overall = "MET"
        else:
            overall = "NOT MET"
        parts.append(f"<p class='verdict'><b>{name}: <span class='{_status_class(overall)}'>{overall}</span></b>"
                     f" ({met} of {len(vs)} task/encoder checks met)</p><ul>")
        for v in vs:
            parts.append(f"<li><span class='{_status_class(v.status)}'>{e(v.status)}</span> "
                         f"<b>{e(v.task)}</b>: {e(v.text)}</li>")
        parts.append("</ul>")
    return "\n".join(parts)


def _task_section(s: Summary, png: bytes) -> str:
    e = html.escape
    fracs = sorted({f for pts in s.curves.values() for f in pts})
    ref = s.reference
    rows = []
    for (enc, mode), pts in sorted(s.curves.items()):
        cells = []
        for f in fracs:
            p = pts.get(f)
            cells.append("<td>-</td>" if p is None else
                         f"<td>{_fmt(p.mean)}<br><span class='small'>[{_fmt(p.low)}, {_fmt(p.high)}] "
                         f"n={p.seeds}</span></td>")
        kind = s.encoder_kind.get(enc, "?")
        if ref is not None and math.isfinite(ref.mean) and kind != "random":
            sf = s.smallest_fraction(enc, mode, ref.mean)
            reach = "not reached" if sf is None else f"{100 * sf:g} %"
        else:
            reach = "-"
        rows.append(f"<tr><td class='l'>{e(enc)}</td><td class='l'>{e(kind)}</td><td class='l'>{e(mode)}</td>"
                    f"{''.join(cells)}<td>{e(reach)}</td></tr>")
    head = "".join(f"<th>{100 * f:g} %</th>" for f in fracs)
    ref_txt = ("missing (no random-init fine-tuned run at 100 %)" if ref is None
               else f"{_fmt(ref.mean)} [{_fmt(ref.low)}, {_fmt(ref.high)}]")
    if ref is not None and ref.still_improving:
        ref_txt += (f" - warning: in {ref.still_improving} of {ref.seeds} seeds the baseline's best validation score "
                    f"came at its last step ({ref.max_steps} steps), so it may be under-trained, which flatters "
                    "the pretrained encoders; raise the step budget (--max-steps / --finetune-max-steps)")
    img = base64.b64encode(png).decode("ascii")
    return (f"<h2 id='task-{e(s.task)}'>{e(s.task)}</h2>"
            f"<p>kind: {e(s.kind)}; role: {e(str(s.role or '-'))}; metric: <b>{e(s.metric)}</b> (test split); "
            f"random-init baseline at 100 %: <b>{e(ref_txt)}</b></p>"
            f"<img alt='data-efficiency plot of {e(s.task)}' src='data:image/png;base64,{img}'>"
            f"<table><tr><th class='l'>encoder</th><th class='l'>kind</th><th class='l'>mode</th>{head}"
            f"<th>smallest fraction reaching random-init 100 %</th></tr>{''.join(rows)}</table>"
            f"{_comparison_table(s)}")


def build_report(folder: str | Path, title: str | None = None) -> Path:
    """Rebuild ``plots/<task>.png`` and ``report.html`` in a sweep folder from its results.

    Args:
        folder: a sweep output folder holding ``results.json`` (and ``config.json``,
            ``versions.json`` when written by :func:`medfoundry.transfer.run_sweep`).
        title: page title (default: the folder name).

    Returns:
        Path of the HTML report.

    Raises:
        DataError: the folder holds no results.
    """
    folder = Path(folder)
    if not (folder / RESULTS_JSON).is_file():
        raise DataError(f"no {RESULTS_JSON} here: run `medfoundry transfer` first", path=folder)
    store = ResultStore(folder)
    summaries = summarise(store.records)
    if not summaries:
        raise DataError("results.json holds no successful run", path=folder / RESULTS_JSON)
    config = _load_json(folder / "config.json")
    goals = _sweep_config(config)
    verdicts = goal_verdicts(summaries, goals)
    e = html.escape
    sections = []
    for task, s in sorted(summaries.items()):
        curves = []
        for (enc, mode), pts in sorted(s.curves.items()):
            fr = sorted(pts)
            baseline = s.encoder_kind.get(enc) == "random"
            curves.append(Curve(f"{enc} / {mode}", fr, [pts[f].mean for f in fr], [pts[f].low for f in fr],
                                [pts[f].high for f in fr], style="--" if baseline else "-"))
        ref = s.reference
        png = efficiency_plot(curves, folder / "plots" / f"{task}.png", title=task, metric=s.metric,
                              reference=None if ref is None else ref.mean, chance=s.chance)
        sections.append(_task_section(s, png))
    versions = _load_json(folder / "versions.json")
    n_ok = sum(r.get("status") == "ok" for r in store.records)
    n_fail = len(store.records) - n_ok
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = title or f"Transfer benchmark: {folder.name}"
    body = [
        f"<h1>{e(title)}</h1>",
        f"<p class='small'>Generated {e(now)} from {n_ok} runs"
        f"{f' ({n_fail} failed runs not shown in the plots)' if n_fail else ''}. "
        "Lines: mean over seeds of the primary metric on the test split; bands: 95 % percentile bootstrap "
        "CI over seeds and test cases. Early stopping used the validation split only.</p>",
        _goal_section(verdicts, goals),
        "<h2>Contents</h2><ul>" + "".join(f"<li><a href='#task-{e(t)}'>{e(t)}</a></li>" for t in sorted(summaries))
        + "</ul>",
        *sections,
        "<h2>Run configuration</h2><pre>" + e(json.dumps(config, indent=2) if config else "not recorded") + "</pre>",
        "<h2>Software versions</h2><pre>" + e(json.dumps(versions, indent=2) if versions else "not recorded") + "</pre>",
        "<details><summary>All runs (CSV)</summary><pre>" + e(store.to_csv()) + "</pre></details>",
    ]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    path = folder / REPORT_NAME
    atomic_write_text(path, page)
    return path
