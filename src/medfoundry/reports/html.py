"""Self-contained HTML report of a transfer sweep, with its figures also as SVG and PDF.

The report answers, per downstream task, the data-efficiency question: at which fraction of
the training data does a pretrained encoder reach the score the **random-init baseline
(fine-tuned, 100 % of the training data)** reaches. It judges goals A, B and C
(:mod:`.verdicts`: MET / NOT MET / INCONCLUSIVE from paired intervals, thresholds from the
sweep's ``config.json``), lists paired encoder comparisons (:func:`paired_comparisons`),
per-class results and confusion matrices of the key runs (:mod:`.per_class`), and draws one
panel per mode with the number of training images under each fraction (:mod:`.plots`).

A run too small to be evidence (fewer than :data:`EVIDENCE_SEEDS` seeds, or fewer than
:data:`EVIDENCE_TRAIN` training images per task, e.g. ``make demo``) gets a "smoke run"
banner that says so and points to the benchmark.
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
from .per_class import per_class_section
from .plots import Curve, efficiency_plot
from .verdicts import Verdict, goal_status, goal_verdicts, seeds_of

__all__ = ["build_report", "summarise", "goal_verdicts", "paired_comparisons", "smoke_reasons", "Summary", "Verdict",
           "Comparison", "EVIDENCE_SEEDS", "EVIDENCE_TRAIN", "BENCHMARK_HINT"]

REPORT_NAME = "report.html"
EVIDENCE_SEEDS = 3  # fewer seeds cannot show the seed-to-seed spread a verdict needs
EVIDENCE_TRAIN = 1000  # fewer training images per task: 1 % is a handful of images
BENCHMARK_HINT = ("the evidence is the bench-scale benchmark (`python benchmarks/data_efficiency.py`: 10,000+ "
                  "training images per task, 3 seeds; its table and verdicts are in the README)")


@dataclass
class Point:
    """Mean over seeds of the primary test metric at one fraction, with its bootstrap CI."""

    mean: float
    low: float
    high: float
    seeds: int
    still_improving: int = 0  # seeds whose best validation came at the last step (budget ran out)
    max_steps: int = 0
    val_mean: float = math.nan  # mean validation score: what may choose between modes
    unconverged: int = 0  # trained runs that ended on their budget, not on a validation plateau
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
    n_train: dict[float, int] = field(default_factory=dict)  # training images per fraction (seed 0's subset)

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
        val = np.array([np.nan if r.get("val_primary") is None else r["val_primary"] for r in runs], dtype=float)
        val_mean = float(np.nanmean(val)) if np.isfinite(val).any() else math.nan
        # records older than the stop_reason field say nothing, and count as converged
        unconverged = sum(1 for r in runs if r.get("converged") is False)
        out[task].curves.setdefault((enc, mode), {})[frac] = Point(
            mean, lo, hi, len(runs), improving, steps, val_mean, unconverged, tuple(int(r["seed"]) for r in runs),
            point, arr)
        if runs[0].get("n_train") is not None:
            out[task].n_train.setdefault(frac, int(runs[0]["n_train"]))
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


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
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.met{color:#0a7a2f;font-weight:600}.notmet{color:#b00020;font-weight:600}
.inc{color:#8a4f00;font-weight:600}.na{color:#666;font-weight:600}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
img{max-width:100%;border:1px solid #eee}.small{color:#666;font-size:.85em}
.smoke{background:#fff4d6;border:2px solid #d99a00;padding:.6em 1em;margin:1em 0}
.cms{display:flex;flex-wrap:wrap;gap:1.2em}table.cm td,table.cm th{padding:.15em .45em}
"""


def _status_class(status: str) -> str:
    return {"MET": "met", "NOT MET": "notmet", "INCONCLUSIVE": "inc"}.get(status, "na")


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


def smoke_reasons(records: list[dict[str, Any]], summaries: dict[str, Summary]) -> list[str]:
    """Why a sweep is too small to be evidence (empty: it is not)."""
    out = []
    seeds = seeds_of(summaries)
    if seeds < EVIDENCE_SEEDS:
        out.append(f"{seeds} seed{'s' if seeds != 1 else ''} (a verdict needs >= {EVIDENCE_SEEDS})")
    small = sorted(t for t, s in summaries.items() if max(s.n_train.values(), default=0) < EVIDENCE_TRAIN)
    if small:
        most = max((max(summaries[t].n_train.values(), default=0) for t in small), default=0)
        out.append(f"at most {most} training images on {', '.join(small)} (1 % of that is a handful of images; "
                   f"a benchmark has >= {EVIDENCE_TRAIN})")
    return out


def _smoke_banner(reasons: list[str]) -> str:
    if not reasons:
        return ""
    return ("<div class='smoke'><b>Smoke run: these figures are not evidence.</b> This sweep is too small to "
            f"support or refute any goal ({html.escape('; '.join(reasons))}): it shows that the pipeline runs "
            f"end to end, nothing more. {html.escape(BENCHMARK_HINT[0].upper() + BENCHMARK_HINT[1:])}. "
            "Its verdicts below are INCONCLUSIVE wherever one seed ran.</div>")


def _scored_on(cfg: TransferConfig) -> str:
    """Where a sweep's figures come from, in the words every caption uses."""
    return "test split" if cfg.score_split == "test" else "scoring half of the val split"


def _recipe_banner(cfg: TransferConfig) -> str:
    if cfg.score_split == "test":
        return ""
    return ("<div class='smoke'><b>Recipe tuning: scored on the val split.</b> Every figure here is on the "
            "scoring half of the val split (early stopping used the other half); the test split was not read. "
            "Use it to choose settings, then report a test-split sweep.</div>")


def _goal_section(verdicts: list[Verdict], cfg: TransferConfig) -> str:
    a_fraction, a_ratio = cfg.goal_in_domain_fraction, cfg.goal_in_domain_ratio
    b_fraction = cfg.goal_out_of_domain_fraction
    e = html.escape
    parts = ["<h2>Goals</h2>",
             f"<p class='small'>Goal A: on in-domain downstream tasks, the frozen multi-task encoder at "
             f"{100 * a_fraction:g} % of the training data reaches >= {100 * a_ratio:g} % of the "
             f"random-init (fine-tuned) score at 100 %. Goal B: on out-of-domain tasks, the multi-task "
             f"encoder at {100 * b_fraction:g} % (its mode chosen by validation score) reaches the random-init "
             f"score at 100 %. Goal C: in a mode, the multi-task encoder beats every single-task encoder of "
             f"the same budget on at least two thirds of the downstream tasks, at each task's goal fraction. "
             f"A check is MET only when the 95 % interval of the paired difference (by seed and test-case "
             f"resample) lies above the threshold, NOT MET when below, INCONCLUSIVE when it straddles the "
             f"threshold, when one seed ran, or when the reference is indistinguishable from chance. "
             f"All numbers are on the {_scored_on(cfg)}.</p>"]
    names = (("A", "Goal A (in-domain)", "no downstream task with role in-domain"),
             ("B", "Goal B (out-of-domain)", "no downstream task with role out-of-domain"),
             ("C", "Goal C (multi-task vs single-task)", "no multi-task and single-task encoders to compare"))
    for goal, name, why_none in names:
        vs = [v for v in verdicts if v.goal == goal]
        if not vs:
            parts.append(f"<p><b>{name}: NOT EVALUATED</b> - {why_none} in these results.</p>")
            continue
        overall = goal_status(v.status for v in vs)
        counts = ", ".join(f"{n} {st.lower()}" for st in ("MET", "NOT MET", "INCONCLUSIVE", "NOT EVALUATED")
                           if (n := sum(v.status == st for v in vs)))
        parts.append(f"<p class='verdict'><b>{name}: <span class='{_status_class(overall)}'>{overall}</span></b>"
                     f" ({len(vs)} check{'s' if len(vs) != 1 else ''}: {counts})</p><ul>")
        for v in vs:
            where = v.task if goal != "C" else f"{v.task} mode"
            parts.append(f"<li><span class='{_status_class(v.status)}'>{e(v.status)}</span> "
                         f"<b>{e(where)}</b>: {e(v.text)}</li>")
        parts.append("</ul>")
    return "\n".join(parts)


def _task_section(s: Summary, png: bytes, records: list[dict[str, Any]], cfg: TransferConfig) -> str:
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
    head = "".join(f"<th>{100 * f:g} %" + (f"<br><span class='small'>{s.n_train[f]} images</span>"
                                           if f in s.n_train else "") + "</th>" for f in fracs)
    ref_txt = ("missing (no random-init fine-tuned run at 100 %)" if ref is None
               else f"{_fmt(ref.mean)} [{_fmt(ref.low)}, {_fmt(ref.high)}]")
    if ref is not None and ref.still_improving:
        ref_txt += (f" - warning: in {ref.still_improving} of {ref.seeds} seeds the baseline's best validation score "
                    f"came at its last step ({ref.max_steps} steps), so it may be under-trained, which flatters "
                    "the pretrained encoders; raise the step budget (--max-steps / --finetune-max-steps)")
    if ref is not None and s.chance is not None and math.isfinite(ref.low) and ref.low <= s.chance:
        ref_txt += f" - caution: its interval reaches chance ({_fmt(s.chance)})"
    img = base64.b64encode(png).decode("ascii")
    links = " ".join(f"<a href='plots/{e(s.task)}.{fmt}'>{fmt.upper()}</a>" for fmt in ("svg", "pdf", "png"))
    return (f"<h2 id='task-{e(s.task)}'>{e(s.task)}</h2>"
            f"<p>kind: {e(s.kind)}; role: {e(str(s.role or '-'))}; metric: <b>{e(s.metric)}</b> ({_scored_on(cfg)}); "
            f"chance: {_fmt(s.chance)}; random-init baseline at 100 %: <b>{e(ref_txt)}</b></p>"
            f"<img alt='data-efficiency plot of {e(s.task)}' src='data:image/png;base64,{img}'>"
            f"<p class='small'>Figure files: {links}</p>"
            f"<table><tr><th class='l'>encoder</th><th class='l'>kind</th><th class='l'>mode</th>{head}"
            f"<th>smallest fraction reaching random-init 100 %</th></tr>{''.join(rows)}</table>"
            f"{_comparison_table(s)}{per_class_section(records, s.role, cfg)}")


def _panels(s: Summary) -> dict[str, list[Curve]]:
    """One panel per mode; every curve is an encoder (dashed: random init)."""
    panels: dict[str, list[Curve]] = {}
    for (enc, mode), pts in sorted(s.curves.items(), key=lambda kv: (kv[0][1] != "frozen", kv[0])):
        fr = sorted(pts)
        style = "--" if s.encoder_kind.get(enc) == "random" else "-"
        panels.setdefault({"finetune": "fine-tuned"}.get(mode, mode), []).append(
            Curve(enc, fr, [pts[f].mean for f in fr], [pts[f].low for f in fr], [pts[f].high for f in fr], style))
    return panels


def build_report(folder: str | Path, title: str | None = None, smoke: bool | None = None) -> Path:
    """Rebuild ``plots/<task>.{png,svg,pdf}`` and ``report.html`` in a sweep folder from its results.

    Args:
        folder: a sweep output folder holding ``results.json`` (and ``config.json``,
            ``versions.json`` when written by :func:`medfoundry.transfer.run_sweep`).
        title: page title (default: the folder name).
        smoke: force (``True``) or suppress (``False``) the smoke-run banner; default: shown
            when :func:`smoke_reasons` finds the sweep too small.

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
    reasons = smoke_reasons(store.records, summaries)
    if smoke is True and not reasons:
        reasons = ["marked as a smoke run by its caller"]
    elif smoke is False:
        reasons = []
    e = html.escape
    sections = []
    for task, s in sorted(summaries.items()):
        ref = s.reference
        png = efficiency_plot(_panels(s), folder / "plots" / f"{task}.png", title=task, metric=s.metric,
                              reference=None if ref is None else ref.mean, chance=s.chance, counts=s.n_train)
        sections.append(_task_section(s, png, [r for r in store.records if r.get("task") == task], goals))
    versions = _load_json(folder / "versions.json")
    n_ok = sum(r.get("status") == "ok" for r in store.records)
    n_fail = len(store.records) - n_ok
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = title or f"Transfer benchmark: {folder.name}"
    body = [
        f"<h1>{e(title)}</h1>",
        _smoke_banner(reasons),
        _recipe_banner(goals),
        f"<p class='small'>Generated {e(now)} from {n_ok} runs"
        f"{f' ({n_fail} failed runs not shown in the plots)' if n_fail else ''}. "
        f"Lines: mean over seeds of the primary metric on the {_scored_on(goals)}; bands: 95 % percentile "
        "bootstrap CI over seeds and scored cases; one panel per mode, the number of training images under "
        "each fraction. Early stopping used the validation split only.</p>",
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
