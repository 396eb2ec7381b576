"""Summary metrics on hand-computed curves, and the global top-k pruner."""

import pytest
import torch
from tiny import tiny_model

from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.interfaces import PruneContext
from unlearn_core.metrics import summarise
from unlearn_core.topk import GlobalTopK

ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}


def test_summary_on_a_hand_computed_curve():
    forget = [0.50, 0.40, 0.20, 0.10]  # drops 0, 20 %, 60 %, 80 %
    retain = [0.40, 0.40, 0.39, 0.28]  # drops 0, 0 %, 2.5 %, 30 %
    s = summarise(forget, retain)
    assert s.selectivity == pytest.approx(57.5)  # step 2: 60 - 2.5
    assert s.best_step == 2
    assert s.forget_drop_at_retain_5 == pytest.approx(60.0)  # last step with retain drop <= 5 %
    assert s.step_at_retain_5 == 2
    assert s.final_forget_drop == pytest.approx(80.0) and s.final_retain_drop == pytest.approx(30.0)
    # trapezoids over retain drop: 0.025 * (0.2 + 0.6) / 2 + (0.3 - 0.025) * (0.6 + 0.8) / 2
    assert s.auc == pytest.approx(100 * (0.01 + 0.1925) / 0.3)


def test_selectivity_can_be_negative():
    s = summarise([0.5, 0.45], [0.4, 0.2])
    assert s.selectivity == pytest.approx(10 - 50)


def _ctx(model, pruned=None):
    site = resolve_site(model, "mlp", ARCHS)
    pruned = torch.zeros(site.shape, dtype=torch.bool) if pruned is None else pruned
    empty = torch.zeros(0, 4, dtype=torch.long)
    return PruneContext(model, site, empty, empty, pruned, step=1, seed=0)


def test_global_top_k_takes_the_highest_scores_across_layers():
    ctx = _ctx(tiny_model("llama"))
    scores = torch.zeros(ctx.site.shape)
    scores[0, 5], scores[1, 7], scores[1, 9], scores[0, 1] = 4.0, 3.0, 2.0, 1.0
    mask = GlobalTopK().prune(ctx, scores, 3)
    assert mask.sum() == 3
    assert mask[0, 5] and mask[1, 7] and mask[1, 9] and not mask[0, 1]
    assert torch.all(ctx.site._outputs[0].weight[:, 5] == 0)


def test_global_top_k_skips_pruned_neurons_and_breaks_ties_by_position():
    pruned = torch.zeros(2, 48, dtype=torch.bool)
    pruned[0, 0] = True
    ctx = _ctx(tiny_model("llama"), pruned)
    mask = GlobalTopK().prune(ctx, torch.ones(2, 48), 2)
    assert mask.sum() == 3 and mask[0, 0] and mask[0, 1] and mask[0, 2]


def test_global_top_k_rejects_bad_scores():
    ctx = _ctx(tiny_model("llama"))
    with pytest.raises(ValueError, match="shape"):
        GlobalTopK().prune(ctx, torch.ones(3, 48), 1)
    bad = torch.ones(2, 48)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        GlobalTopK().prune(ctx, bad, 1)
