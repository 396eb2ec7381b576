"""Summaries of a pruning curve (definitions are part of the product; see docs/metrics.md).

drop(step) = (before - after) / before of top-1 accuracy, per corpus, relative to step 0.
selectivity = max over steps >= 1 of (forget drop - retain drop), in points (x 100).
forget drop at retain <= 5 % = forget drop at the last step whose retain drop is <= 0.05.
AUC = area under forget drop as a function of retain drop (trapezoids over the steps, in the
order they were taken), normalised by the retain-drop range covered; 0 when no range is covered.
"""

from __future__ import annotations

from pydantic import BaseModel


class Summary(BaseModel):
    selectivity: float  # points
    best_step: int
    forget_drop_at_retain_5: float  # points
    step_at_retain_5: int
    auc: float  # mean forget drop over the retain-drop range, in points
    final_forget_drop: float  # points
    final_retain_drop: float  # points


def relative_drop(before: float, after: float) -> float:
    return (before - after) / before if before else 0.0


def summarise(forget_top1: list[float], retain_top1: list[float]) -> Summary:
    """Curves are top-1 accuracies at steps 0..n (step 0 = before pruning)."""
    if len(forget_top1) != len(retain_top1) or not forget_top1:
        raise ValueError("forget and retain curves need the same, non-zero length")
    f = [relative_drop(forget_top1[0], a) for a in forget_top1]
    r = [relative_drop(retain_top1[0], a) for a in retain_top1]
    gaps = [(f[i] - r[i], i) for i in range(1, len(f))] or [(0.0, 0)]
    best_gap, best_step = max(gaps, key=lambda g: (g[0], -g[1]))
    within = [i for i in range(len(r)) if r[i] <= 0.05]
    at5 = max(within) if within else 0
    area, span = 0.0, 0.0
    for i in range(1, len(f)):
        dx = r[i] - r[i - 1]
        area += dx * (f[i] + f[i - 1]) / 2
        span += dx
    auc = area / span if span > 0 else 0.0
    pts = lambda x: round(100 * x, 4)  # noqa: E731
    return Summary(selectivity=pts(best_gap), best_step=best_step,
                   forget_drop_at_retain_5=pts(f[at5]), step_at_retain_5=at5, auc=pts(auc),
                   final_forget_drop=pts(f[-1]), final_retain_drop=pts(r[-1]))
