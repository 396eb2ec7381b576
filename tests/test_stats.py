"""Streamed statistics equal the definitions computed from all activations at once."""

import pytest
import torch
from tiny import tiny_model

from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.stats import IMPORTANCES, NeuronStatistics, collect_statistics

ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}


def _all_activations(model, site, windows, mask=None):
    """float64 [L, n_tokens, N] of every non-padding token, collected the plain way."""
    per_layer = [[] for _ in range(site.n_layers)]
    handles = [site.register_hook(i, lambda a, i=i: per_layer[i].append(a.detach().double()))
               for i in range(site.n_layers)]
    with torch.no_grad():
        model(input_ids=windows, attention_mask=mask)
    for h in handles:
        h.remove()
    n = site.n_neurons
    acts = torch.stack([torch.cat([a.reshape(-1, n) for a in x]) for x in per_layer])  # [L, B*T, N]
    return acts[:, mask.bool().reshape(-1)] if mask is not None else acts


def _reference(z):
    return {"freq": (z > 0).double().mean(1), "abs": z.abs().mean(1),
            "rms": z.pow(2).mean(1).sqrt(), "std": z.std(1, unbiased=False)}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gpt_neox"])
def test_streamed_statistics_match_definitions(arch):
    model = tiny_model(arch)
    site = resolve_site(model, "mlp", ARCHS)
    windows = torch.randint(0, 256, (10, 24), generator=torch.Generator().manual_seed(0))
    stats = collect_statistics(model, site, windows, batch_size=3)  # uneven last batch
    assert stats.tokens == 240
    ref = _reference(_all_activations(model, site, windows))
    for name in IMPORTANCES:
        torch.testing.assert_close(stats.importance(name), ref[name], rtol=1e-5, atol=1e-7)


def test_std_is_a_standard_deviation_not_a_variance():
    stats = NeuronStatistics.zeros(1, 2)
    stats.add(0, torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
    stats.add(0, torch.tensor([[5.0, 50.0]]))
    # population std of (1, 3, 5) is sqrt(8/3); of (10, 30, 50) ten times that
    torch.testing.assert_close(stats.importance("std"),
                               torch.tensor([[(8 / 3) ** 0.5, 10 * (8 / 3) ** 0.5]], dtype=torch.float64))
    torch.testing.assert_close(stats.importance("rms"),
                               torch.tensor([[(35 / 3) ** 0.5, 10 * (35 / 3) ** 0.5]], dtype=torch.float64))


def test_padding_is_excluded():
    """Right-padded windows give the statistics of the unpadded sequences alone."""
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", ARCHS)
    g = torch.Generator().manual_seed(1)
    lengths = [20, 13, 7]
    windows = torch.randint(0, 256, (3, 20), generator=g)
    mask = torch.zeros(3, 20, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        windows[i, n:] = 0  # padding token: would move every statistic if counted
    padded = collect_statistics(model, site, windows, batch_size=3, attention_mask=mask)
    assert padded.tokens == sum(lengths)
    separate = [_all_activations(model, site, windows[i:i + 1, :n]) for i, n in enumerate(lengths)]
    ref = _reference(torch.cat(separate, dim=1))
    for name in IMPORTANCES:
        torch.testing.assert_close(padded.importance(name), ref[name], rtol=1e-4, atol=1e-6)


def test_statistics_pass_never_runs_the_lm_head():
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", ARCHS)
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    collect_statistics(model, site, torch.zeros(2, 8, dtype=torch.long))
    assert calls == []
    model(torch.zeros(1, 4, dtype=torch.long))
    assert calls == [1]


def test_bos_position_is_left_out_of_the_statistics():
    """Position 0 holds the same BOS in every window: it says nothing about the corpus."""
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", ARCHS)
    windows = torch.randint(1, 256, (6, 16), generator=torch.Generator().manual_seed(2))
    windows[:, 0] = 0
    stats = collect_statistics(model, site, windows, batch_size=4, bos=True)
    assert stats.tokens == 6 * 15
    acts = _all_activations(model, site, windows)  # [L, B*T, N]
    ref = _reference(acts.reshape(site.n_layers, 6, 16, -1)[:, :, 1:].reshape(site.n_layers, 6 * 15, -1))
    for name in IMPORTANCES:
        torch.testing.assert_close(stats.importance(name), ref[name], rtol=1e-5, atol=1e-7)
    with_bos = collect_statistics(model, site, windows, batch_size=4)
    assert with_bos.tokens == 96 and not torch.allclose(with_bos.importance("abs"), stats.importance("abs"))
