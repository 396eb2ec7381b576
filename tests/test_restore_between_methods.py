"""Every method in a bench starts from the original weights, whatever ran before it.

An inline method plugin ('peek') copies the site's parameters when its scorer is first called and
compares nothing itself; the test compares those copies with a freshly loaded model's. The shared
step-0 record cannot show this (it is evaluated once, before any method prunes).
"""

import pytest
import torch

from unlearn_core import BenchConfig, MethodSpec, hookimpl, run_bench
from unlearn_core.architectures import resolve_site
from unlearn_core.models import load_model
from unlearn_core.plugins import load_plugins

SEEN: list[tuple[str, int, dict[str, torch.Tensor]]] = []  # (method, step, site parameters)


class Peek:
    """Methods 'peek' and 'peek-again': random scores, and a copy of the site's weights at every call."""

    @hookimpl
    def register_methods(self, register):
        def scorer_for(name):
            class Scorer:
                def __init__(self, options):
                    pass

                def score(self, ctx):
                    SEEN.append((name, ctx.step, {k: p.detach().clone()
                                                  for k, p in ctx.site.parameters().items()}))
                    return torch.rand(ctx.site.shape, generator=ctx.generator())

            return Scorer

        for name in ("peek", "peek-again"):
            register(MethodSpec(name=name, description="records the weights it is handed",
                                scorer=scorer_for(name)))


def _config(tiny_folder, corpora, methods):
    forget, retain = corpora
    return BenchConfig(methods=methods, model=str(tiny_folder), forget=forget, retain=retain,
                       preset="smoke", steps=2, fraction=0.1, tokens=512, eval_tokens=256, window=64, seed=3)


def _original(tiny_folder, registry):
    site = resolve_site(load_model(str(tiny_folder), progress=False).model, "mlp", registry.architectures)
    return {k: p.detach().clone() for k, p in site.parameters().items()}


def _differing(seen, original):
    assert set(seen) == set(original)
    return sorted(k for k in original if not torch.equal(seen[k], original[k]))


def _outcome(record):
    return ([(s.pruned, s.forget.model_dump(), s.retain.model_dump()) for s in record.steps],
            record.pruned_neurons)


@pytest.mark.parametrize("methods", [["selective", "peek"], ["peek", "selective"],
                                     ["peek", "selective", "peek-again"]], ids=",".join)
def test_every_method_starts_from_the_original_weights(tiny_folder, text_corpora, methods):
    registry = load_plugins(extra=[("peek", Peek())])
    original = _original(tiny_folder, registry)
    SEEN.clear()
    records = run_bench(_config(tiny_folder, text_corpora, methods), registry=registry, progress=False,
                        log=lambda m: None)
    assert [r.method for r in records] == methods
    peeks = [m for m in methods if m != "selective"]
    assert [(name, step) for name, step, _ in SEEN] == [(m, s) for m in peeks for s in (1, 2)]
    for name, step, seen in SEEN:
        changed = _differing(seen, original)
        if step == 1:
            assert not changed, (f"'{name}' (after {methods[:methods.index(name)]}) was handed weights that "
                                 f"differ from the freshly loaded model's in {changed}")
        else:  # its own step-1 deletions are visible: the comparison can tell weights apart
            assert changed

    solo = run_bench(_config(tiny_folder, text_corpora, ["selective"]), registry=registry, progress=False,
                     log=lambda m: None)[0]
    selective = next(r for r in records if r.method == "selective")
    assert _outcome(selective) == _outcome(solo), \
        f"selective after {methods[:methods.index('selective')]} differs from selective run alone"
