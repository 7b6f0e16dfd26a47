"""Goal verdicts of a transfer sweep: MET, NOT MET or INCONCLUSIVE, each with its reason.

* **Goal A** (in-domain tasks, ``TaskSpec.extra["role"] == "in-domain"``): the *frozen*
  multi-task encoder at ``goal_in_domain_fraction`` (1 %) of the training data scores
  >= ``goal_in_domain_ratio`` (95 %) of random init fine-tuned on 100 % (the reference).
* **Goal B** (``role == "out-of-domain"``): the multi-task encoder at
  ``goal_out_of_domain_fraction`` (50 %) scores >= the reference. Its mode (frozen or
  fine-tuned) is the one with the better *validation* score, so the test split judges
  a choice it did not make.
* **Goal C**: in each mode, the multi-task encoder beats every single-task encoder of the
  same budget on at least two thirds of the downstream tasks (2 of 3), compared at each
  task's goal fraction (100 % on a task without a role).

A check is **MET** only when the interval of the difference (candidate - threshold, paired by
seed and by bootstrap resample of the test cases, :func:`medfoundry.evaluation.stats.paired_seed_difference`)
lies above 0, **NOT MET** when it lies below, and **INCONCLUSIVE** when it holds 0, when only
one seed ran (one seed says nothing about the seed-to-seed spread), or when the reference
is indistinguishable from chance (its interval reaches the kind's chance level,
:meth:`medfoundry.tasks.Kind.chance_level`: beating an untrained reference shows nothing).
Missing runs give **NOT EVALUATED**, naming what to add. A goal over several checks is MET
when every check is, NOT MET when any is, else INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from ..evaluation.directions import higher_is_better
from ..evaluation.stats import PairedDifference, paired_seed_difference
from ..transfer.config import TransferConfig

if TYPE_CHECKING:
    from .html import Point, Summary

__all__ = ["Verdict", "goal_verdicts", "goal_status", "seeds_of", "STATUSES", "C_SHARE"]

STATUSES = ("MET", "NOT MET", "INCONCLUSIVE", "NOT EVALUATED")
C_SHARE = 2 / 3  # goal C: the share of downstream tasks the multi-task encoder must win


@dataclass
class Verdict:
    goal: str  # "A" | "B" | "C"
    task: str  # a task, or "frozen" / "finetune" for goal C (one check per mode)
    encoder: str
    status: str  # one of STATUSES
    text: str
    difference: PairedDifference | None = None  # candidate - threshold, where one was computed


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _at(points: dict[float, "Point"], fraction: float) -> "Point | None":
    return next((p for f, p in points.items() if _close(f, fraction)), None)


def _scaled(p: "Point", factor: float) -> tuple:
    return (p.seed_ids, None if p.values is None else p.values * factor,
            None if p.replicates is None else p.replicates * factor)


def _difference(p: "Point", q: "Point", q_factor: float = 1.0) -> PairedDifference:
    """``p - q_factor * q`` paired on the seeds both have (and the shared case resamples)."""
    return paired_seed_difference(*_scaled(p, 1.0), *_scaled(q, q_factor))


def _decide(d: PairedDifference, higher: bool, caveats: list[str]) -> tuple[str, str]:
    """Status and the reason from a difference ``candidate - threshold``."""
    if d.n == 0 or not math.isfinite(d.difference):
        return "NOT EVALUATED", "the runs share no seed, so they cannot be paired"
    ci = f"difference {_fmt(d.difference)}, 95 % CI [{_fmt(d.low)}, {_fmt(d.high)}]"
    above, below = (d.low > 0, d.high < 0) if higher else (d.high < 0, d.low > 0)
    if caveats:
        return "INCONCLUSIVE", f"{ci}; inconclusive: {'; '.join(caveats)}"
    if above:
        return "MET", f"{ci}: the interval lies on the passing side"
    if below:
        return "NOT MET", f"{ci}: the interval lies on the failing side"
    return "INCONCLUSIVE", f"{ci}: inconclusive, the interval straddles the threshold"


def _caveats(p: "Point", ref: "Point | None", chance: float | None, higher: bool) -> list[str]:
    out = []
    seeds = set(p.seed_ids) & set(ref.seed_ids) if ref is not None else set(p.seed_ids)
    if len(seeds) < 2:
        out.append("single seed: inconclusive (one seed says nothing about the seed-to-seed spread)")
    if ref is not None and chance is not None and math.isfinite(chance):
        reaches = (ref.low <= chance) if higher else (ref.high >= chance)
        if math.isfinite(ref.low) and reaches:
            out.append(f"the random-init reference ({_fmt(ref.mean)}, CI [{_fmt(ref.low)}, {_fmt(ref.high)}]) is "
                       f"indistinguishable from chance ({_fmt(chance)}), so beating it shows nothing")
    return out


def _multitask_encoders(s: "Summary") -> tuple[list[str], str]:
    multi = [e for e, k in s.encoder_kind.items() if k == "multi-task"]
    if multi:
        return multi, ""
    other = [e for e, k in s.encoder_kind.items() if k not in ("random", "classical", "single-task")]
    return other, " (no encoder is marked multi-task; using the pretrained encoders given)"


def _goal_fraction(s: "Summary", cfg: TransferConfig) -> float:
    return cfg.goal_fraction(s.role) or 1.0


def _task_checks(s: "Summary", cfg: TransferConfig) -> list[Verdict]:
    """Goal A or B on one task, one verdict per multi-task encoder."""
    goal = "A" if s.role == "in-domain" else "B"
    frac = _goal_fraction(s, cfg)
    ratio = cfg.goal_in_domain_ratio if goal == "A" else 1.0
    higher = higher_is_better(s.metric)
    ref = s.reference
    encoders, note = _multitask_encoders(s)
    if ref is None or not math.isfinite(ref.mean):
        return [Verdict(goal, s.task, "-", "NOT EVALUATED", f"no random-init fine-tuned run at 100 % of {s.task}")]
    if not encoders:
        return [Verdict(goal, s.task, "-", "NOT EVALUATED", f"no pretrained encoder was run on {s.task}")]
    out = []
    for enc in encoders:
        modes = ["frozen"] if goal == "A" else sorted(m for e, m in s.curves if e == enc)
        cands = [(m, _at(s.curves.get((enc, m), {}), frac)) for m in modes]
        cands = [(m, p) for m, p in cands if p is not None and math.isfinite(p.mean)]
        if not cands:
            ran = sorted({f for (e, _), pts in s.curves.items() if e == enc for f in pts})
            out.append(Verdict(goal, s.task, enc, "NOT EVALUATED",
                               f"no {'frozen ' if goal == 'A' else ''}run of {enc} at {100 * frac:g} % (fractions "
                               f"run: {', '.join(f'{100 * f:g} %' for f in ran) or 'none'}); add {frac:g} to "
                               f"--fractions{note}"))
            continue
        # Goal B: the mode with the better validation score (not test) is the one judged
        sign = 1.0 if higher else -1.0
        mode, p = max(cands, key=lambda mp: sign * (mp[1].val_mean if math.isfinite(mp[1].val_mean) else -math.inf))
        threshold = ratio * ref.mean
        need = (f">= {100 * ratio:g} % of random-init at 100 % ({_fmt(ref.mean)}) = {_fmt(threshold)}" if goal == "A"
                else f">= random-init at 100 % = {_fmt(threshold)}")
        d = _difference(p, ref, ratio)
        status, why = _decide(d, higher, _caveats(p, ref, s.chance, higher))
        if status == "MET" and ref.unconverged:
            # the goals are stated against a converged reference; a reference cut short by its
            # budget lowers the bar, so passing it proves nothing (failing it still does)
            status, why = "INCONCLUSIVE", (f"{why}; inconclusive: the random-init reference ended on its step budget "
                                           f"in {ref.unconverged} of {ref.seeds} seeds, not on a validation plateau, "
                                           "so a converged reference may be higher (raise --max-steps)")
        chosen = "" if goal == "A" or len(cands) == 1 else " (the mode with the better validation score)"
        out.append(Verdict(goal, s.task, enc, status,
                           f"{enc} ({mode}{chosen}) at {100 * frac:g} %: {s.metric} {_fmt(p.mean)} over "
                           f"{p.seeds} seed(s) vs. needed {need}; {why}{note}", d))
    return out


def _goal_c(summaries: dict[str, "Summary"], cfg: TransferConfig) -> list[Verdict]:
    """Goal C, one verdict per (mode, multi-task encoder), over the downstream tasks."""
    tasks = [s for s in summaries.values() if s.group == "downstream"] or list(summaries.values())
    multi = sorted({e for s in tasks for e, k in s.encoder_kind.items() if k == "multi-task"})
    single = sorted({e for s in tasks for e, k in s.encoder_kind.items() if k == "single-task"})
    if not tasks or not multi or not single:
        missing = "multi-task" if not multi else "single-task"
        return [Verdict("C", "-", "-", "NOT EVALUATED", f"no {missing} encoder was run on the downstream tasks")]
    need = max(1, math.ceil(C_SHARE * len(tasks) - 1e-9))
    out = []
    modes = sorted({m for s in tasks for (_, m) in s.curves})
    for mode in modes:
        for enc in multi:
            rows, worst = [], "MET"
            for rival in single:
                won, undecided, notes = 0, 0, []
                for s in sorted(tasks, key=lambda x: x.task):
                    frac = _goal_fraction(s, cfg)
                    p, q = _at(s.curves.get((enc, mode), {}), frac), _at(s.curves.get((rival, mode), {}), frac)
                    if p is None or q is None:
                        notes.append(f"{s.task} {100 * frac:g} %: not run")
                        undecided += 1
                        continue
                    higher = higher_is_better(s.metric)
                    d = _difference(p, q)
                    status, _ = _decide(d, higher, _caveats(p, q, None, higher))
                    won += status == "MET"
                    undecided += status in ("INCONCLUSIVE", "NOT EVALUATED")
                    notes.append(f"{s.task} {100 * frac:g} %: {_fmt(d.difference)} [{_fmt(d.low)}, {_fmt(d.high)}]"
                                 f" {'won' if status == 'MET' else 'lost' if status == 'NOT MET' else 'undecided'}")
                status = "MET" if won >= need else "NOT MET" if won + undecided < need else "INCONCLUSIVE"
                worst = goal_status([worst, status])
                rows.append(f"vs {rival}: won {won} of {len(tasks)} tasks (need {need}; {'; '.join(notes)})")
            out.append(Verdict("C", mode, enc, worst, f"{enc} ({mode}) " + " | ".join(rows)))
    return out


def goal_status(statuses: Iterable[str]) -> str:
    """One status of a goal from its checks: MET if all are, NOT MET if any is, else INCONCLUSIVE."""
    statuses = list(statuses)
    judged = [s for s in statuses if s != "NOT EVALUATED"]
    if not judged:
        return "NOT EVALUATED"
    if "NOT MET" in judged:
        return "NOT MET"
    if all(s == "MET" for s in statuses):
        return "MET"
    return "INCONCLUSIVE"


def goal_verdicts(summaries: dict[str, "Summary"], config: TransferConfig | None = None) -> list[Verdict]:
    """Goal A and B verdicts per (task, multi-task encoder) of the matching role, and goal C per mode.

    ``config`` supplies the goals' fractions and ratio (default: ``TransferConfig()``'s).
    """
    cfg = config or TransferConfig()
    out: list[Verdict] = []
    for _, s in sorted(summaries.items()):
        if s.role in ("in-domain", "out-of-domain"):
            out += _task_checks(s, cfg)
    return out + _goal_c(summaries, cfg)


def seeds_of(summaries: dict[str, "Summary"]) -> int:
    """The most seeds any curve point has (1: a single-seed run)."""
    return max((p.seeds for s in summaries.values() for pts in s.curves.values() for p in pts.values()), default=0)
