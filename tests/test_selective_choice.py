"""Selective pruning deletes the neurons specific to the forget corpus, by a reference computed here.

The reference activations come from the MLP's input x (a pre-hook on each layer's `mlp`), as
act_fn(gate_proj(x)) * up_proj(x), without the adapter or the statistics module; the reference
importances follow the paper's definitions; the neurons selective deletes at step 1 must be exactly
the top k of I(forget) / (I(retain) + eps), and each must matter more to forget than to retain.
"""

import pytest
import torch
from tiny import method_plugin, save_tiny, tiny_model

from unlearn_core import BenchConfig, run_bench
from unlearn_core.architectures import resolve_site
from unlearn_core.corpora import build_windows
from unlearn_core.interfaces import PruneContext
from unlearn_core.models import load_model
from unlearn_core.plugins import load_plugins
from unlearn_core.topk import GlobalTopK

EPS = 1e-6  # SelectiveOptions.eps default


@torch.no_grad()
def _reference_activations(model, windows):
    """float64 [L, tokens, N]: act_fn(gate_proj(x)) * up_proj(x) from each layer's MLP input x."""
    layers = model.model.layers
    inputs = [[] for _ in layers]
    handles = [layer.mlp.register_forward_pre_hook(lambda m, args, i=i: inputs[i].append(args[0].detach()))
               for i, layer in enumerate(layers)]
    try:
        model.model(input_ids=windows, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = []
    for layer, xs in zip(layers, inputs, strict=True):
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs])
        mlp = layer.mlp
        out.append((mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)).double())
    return torch.stack(out)


def _importance(z, kind):
    """The paper's statistics over tokens (dim 1) of z [L, tokens, N]."""
    if kind == "freq":
        return (z > 0).double().mean(1)
    if kind == "abs":
        return z.abs().mean(1)
    if kind == "rms":
        return z.square().mean(1).sqrt()
    if kind == "std":
        return (z - z.mean(1, keepdim=True)).square().mean(1).sqrt()
    raise AssertionError(kind)


def _clear_top_k(ratio, low=10, high=30):
    """A k in [low, high] with a clear gap between the k-th and (k+1)-th highest ratio, and the
    reference's top-k set (flat indices); ties or near-ties would make the expected set ambiguous."""
    values, order = torch.sort(ratio.flatten(), descending=True, stable=True)
    for k in range(low, high + 1):
        if values[k - 1] > values[k] * (1 + 1e-3) + 1e-12:
            return k, set(order[:k].tolist())
    raise AssertionError(f"no clear gap among the top {high} reference ratios: {values[:high + 1].tolist()}")


def _chosen(mask):
    return set(mask.flatten().nonzero().flatten().tolist())


def _disjoint_windows():
    """Forget windows use token ids 0..127 only, retain windows 128..255 only."""
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 128, (8, 32), generator=g), torch.randint(128, 256, (8, 32), generator=g)


@pytest.mark.parametrize("kind", ["abs", "freq", "rms", "std"])
def test_selective_deletes_the_top_forget_over_retain_neurons(kind):
    model = tiny_model("llama")
    registry = load_plugins()
    site = resolve_site(model, "mlp", registry.architectures)
    forget_w, retain_w = _disjoint_windows()
    forget = _importance(_reference_activations(model, forget_w), kind)
    retain = _importance(_reference_activations(model, retain_w), kind)
    ratio = forget / (retain + EPS)
    k, expected = _clear_top_k(ratio)
    # The data can tell the right ratio from the inverted one: their top-k sets do not overlap.
    _, inverted = _clear_top_k(retain / (forget + EPS), low=k, high=k + 30)
    assert not expected & inverted

    spec = registry.method("selective")
    scorer = spec.scorer(spec.options(importance=kind))
    ctx = PruneContext(model, site, forget_w, retain_w, torch.zeros(site.shape, dtype=torch.bool),
                       step=1, seed=0, batch_size=3, components=registry.components)
    scores = scorer.score(ctx)
    mask = GlobalTopK().prune(ctx, scores, k)
    chosen = _chosen(mask)
    assert chosen == expected, (
        f"{kind}: selective deleted {sorted(chosen)}, the top {k} of I(forget)/(I(retain)+eps) are "
        f"{sorted(expected)} (top of the inverted ratio: {sorted(inverted)})")
    flat_f, flat_r = forget.flatten(), retain.flatten()
    assert all(flat_f[i] > flat_r[i] for i in chosen), \
        f"{kind}: a deleted neuron matters more to the retain corpus than to the forget corpus"
    torch.testing.assert_close(scores.double(), ratio, rtol=2e-3, atol=1e-6, msg=lambda m: (
        f"{kind}: selective's scores are not I(forget)/(I(retain)+eps)\n{m}"))


def test_bench_selective_step_1_deletes_the_reference_top_k(tmp_path):
    """The same through `run_bench` on a saved model folder and two text corpora that share no
    token but space and newline: forget is digits and operators, retain lower-case words."""
    folder = save_tiny(tmp_path / "model")
    forget_txt, retain_txt = tmp_path / "forget.txt", tmp_path / "retain.txt"
    forget_txt.write_text("".join(f"{i * 7919 % 1000} + {i % 97} * {i % 13} = {i}\n" for i in range(2000)))
    words = ["now", "fair", "hippolyta", "our", "nuptial", "hour", "draws", "on", "apace"]
    retain_txt.write_text("".join(" ".join(words[(i + j) % 9] for j in range(7)) + "\n" for i in range(2000)))
    forget_spec, retain_spec = f"text:{forget_txt}", f"text:{retain_txt}"
    sizes = dict(tokens=512, eval_tokens=256, window=64, seed=5)

    seen: dict[str, torch.Tensor] = {}

    def spy(ctx):  # keeps the statistics windows the bench hands to methods
        seen.update(forget=ctx.forget_windows.clone(), retain=ctx.retain_windows.clone())
        return torch.zeros(ctx.site.shape)

    registry = load_plugins(extra=[("spy", method_plugin("spy", spy))])
    loaded = load_model(str(folder), progress=False)
    stats = {role: build_windows(spec, registry.corpora, loaded.tokenizer, sizes["tokens"],
                                 sizes["eval_tokens"], sizes["window"], sizes["seed"]).stats
             for role, spec in (("forget", forget_spec), ("retain", retain_spec))}
    forget = _importance(_reference_activations(loaded.model, stats["forget"]), "abs")
    retain = _importance(_reference_activations(loaded.model, stats["retain"]), "abs")
    k, expected = _clear_top_k(forget / (retain + EPS))

    config = BenchConfig(methods=["selective", "spy"], model=str(folder), forget=forget_spec,
                         retain=retain_spec, preset="smoke", steps=1, count=k, **sizes)
    record, _ = run_bench(config, registry=registry, progress=False, log=lambda m: None)
    for role in ("forget", "retain"):  # the reference used the very windows the bench scored on
        assert torch.equal(seen[role], stats[role]), f"the bench scored other {role} windows"
    n = forget.shape[1]
    chosen = {layer * n + i for layer, idx in enumerate(record.pruned_neurons) for i in idx}
    assert chosen == expected, (
        f"the bench's selective step 1 deleted {sorted(chosen)}, the top {k} of I(forget)/(I(retain)+eps) "
        f"are {sorted(expected)}")
    assert all(forget.flatten()[i] > retain.flatten()[i] for i in chosen)
