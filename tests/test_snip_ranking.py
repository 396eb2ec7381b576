"""SNIP ranks a neuron by its explanation's MAX cosine similarity to any concept of the forget data.

Two concepts; explanation A is concept 1 word for word and shares nothing with concept 2 (max 1,
min 0); explanation B shares one word with each (max = min = 1/sqrt(6)). The max ranks A above B,
a min would not. An inline plugin registers two small, real components: a bag-of-words embedder
and an explainer that hands out the hand-written explanations by neuron id (so they go through the
real SQLite store the way any explainer's do); scoring runs the real SnipScorer and the bench's
pruner, directly and through `run_bench`.
"""

import math
import re
from collections.abc import Sequence

import torch
from tiny import tiny_model, tiny_tokenizer

from unlearn_core import (
    BenchConfig,
    ComponentSpec,
    Embedder,
    Explainer,
    NeuronId,
    NeuronRecords,
    hookimpl,
    run_bench,
)
from unlearn_core.architectures import resolve_site
from unlearn_core.interfaces import PruneContext
from unlearn_core.models import fingerprint
from unlearn_core.plugins import load_plugins
from unlearn_core.topk import GlobalTopK
from unlearn_snip.method import SnipOptions, SnipScorer

CONCEPTS = ["python source code", "shakespeare verse poetry"]
VOCABULARY = ["python", "source", "code", "shakespeare", "verse", "poetry"]
A_TEXT = "Python source code"  # = concept 1; nothing of concept 2
B_TEXT = "python verse"  # one word of each concept
OTHER_TEXT = "rainy weather in late autumn"  # nothing of either
A = {NeuronId(0, 3), NeuronId(0, 40), NeuronId(1, 7), NeuronId(1, 11), NeuronId(1, 47)}
B = {NeuronId(0, 0), NeuronId(0, 5), NeuronId(0, 41), NeuronId(1, 20), NeuronId(1, 30)}


class BagOfWords:
    """Word counts over a fixed vocabulary (plus one bucket for every other word), unit length."""

    name = "bow"

    def __init__(self, vocabulary: Sequence[str]):
        self.index = {w.lower(): i for i, w in enumerate(vocabulary)}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        rows = torch.zeros(len(texts), len(self.index) + 1)
        for row, text in zip(rows, texts, strict=True):
            for word in re.findall(r"[a-z]+", text.lower()):
                row[self.index.get(word, len(self.index))] += 1
        return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


class HandWritten:
    """Explains neurons of A as A_TEXT, of B as B_TEXT and every other neuron as OTHER_TEXT."""

    name = "hand"

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        return [A_TEXT if r.neuron in A else B_TEXT if r.neuron in B else OTHER_TEXT for r in neurons]

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        return CONCEPTS[:n]

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        return [0.0 for _ in explanations]


class RankingPlugin:
    @hookimpl
    def register_components(self, register):
        register(ComponentSpec("embedder", "bow", "bag of words over a given vocabulary (tests)", BagOfWords))
        register(ComponentSpec("explainer", "hand", "hand-written explanations (tests)", HandWritten))


def _registry():
    registry = load_plugins(extra=[("ranking", RankingPlugin())])
    assert registry.component("embedder", "bow").build is BagOfWords and not registry.failed
    assert registry.component("explainer", "hand").build is HandWritten
    return registry


def _options(store):
    return SnipOptions(store=str(store), explainer="hand", concepts=CONCEPTS, embedder="bow",
                       embedder_options={"vocabulary": VOCABULARY})


def test_the_concepts_make_max_and_min_disagree():
    embedder = BagOfWords(VOCABULARY)
    assert isinstance(embedder, Embedder) and isinstance(HandWritten(), Explainer)
    sims = embedder.embed([A_TEXT, B_TEXT, OTHER_TEXT]) @ embedder.embed(CONCEPTS).T
    torch.testing.assert_close(sims, torch.tensor([[1.0, 0.0], [1 / math.sqrt(6), 1 / math.sqrt(6)],
                                                   [0.0, 0.0]]))
    assert sims[0].max() > sims[1].max() and sims[0].min() < sims[1].min()


def test_snip_ranks_the_explanation_equal_to_one_concept_first(tmp_path):
    model = tiny_model("llama")
    registry = _registry()
    site = resolve_site(model, "mlp", registry.architectures)
    g = torch.Generator().manual_seed(0)
    ctx = PruneContext(model, site, torch.randint(0, 256, (4, 64), generator=g),
                       torch.randint(0, 256, (4, 64), generator=g), torch.zeros(site.shape, dtype=torch.bool),
                       step=1, seed=0, tokenizer=tiny_tokenizer(), model_fingerprint=fingerprint(model),
                       forget_spec="python", retain_spec="shakespeare", components=registry.components)
    scorer = SnipScorer(_options(tmp_path / "e.sqlite"))
    scores = scorer.score(ctx)
    assert scorer.info()["explained"] == 96 and scorer.info()["embedder"] == "bow"
    a_scores = [float(scores[n.layer, n.index]) for n in sorted(A)]
    b_scores = [float(scores[n.layer, n.index]) for n in sorted(B)]
    others = [float(scores[layer, i]) for layer in range(2) for i in range(48)
              if NeuronId(layer, i) not in A | B]
    assert min(a_scores) > max(b_scores), (
        f"SNIP scored the explanation identical to a concept ({a_scores}) below one that is only "
        f"moderately similar to every concept ({b_scores}): a neuron's score must be its MAX similarity")
    assert min(b_scores) > max(others)
    torch.testing.assert_close(torch.tensor(a_scores + b_scores + others),
                               torch.tensor([1.0] * 5 + [1 / math.sqrt(6)] * 5 + [0.0] * len(others)),
                               atol=1e-6, rtol=1e-6)
    mask = GlobalTopK().prune(ctx, scores, len(A))
    assert {NeuronId(int(a), int(b)) for a, b in mask.nonzero()} == A


def test_bench_snip_prunes_the_neurons_explained_as_a_concept(tiny_folder, text_corpora, tmp_path):
    forget, retain = text_corpora
    config = BenchConfig(methods=["snip"], model=str(tiny_folder), forget=forget, retain=retain,
                         preset="smoke", steps=1, count=len(A), tokens=512, eval_tokens=256, window=64,
                         options={"snip": _options(tmp_path / "e.sqlite").model_dump(mode="json")})
    (record,) = run_bench(config, registry=_registry(), progress=False, log=lambda m: None)
    assert record.method_info["explained"] == 96 and record.method_info["embedder"] == "bow"
    pruned = {NeuronId(layer, i) for layer, idx in enumerate(record.pruned_neurons) for i in idx}
    assert pruned == A, (f"the bench's snip deleted {sorted(pruned)}, not the neurons whose explanation "
                         f"is a concept {sorted(A)}")
