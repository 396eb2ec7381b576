"""The `local` explainer on the real SmolLM2 (slow: `pytest -m slow`)."""

import pytest
import torch

from unlearn_core import NeuronId
from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.corpora import BUILTIN_CORPORA, build_windows
from unlearn_snip.activations import top_activations
from unlearn_snip.explainers import LocalExplainer
from unlearn_snip.method import _token_strings

pytestmark = pytest.mark.slow


def test_smollm2_explains_real_neurons_in_words():
    explainer = LocalExplainer(batch_size=4, progress=False)
    corpora = {c.name: c for c in BUILTIN_CORPORA}
    windows = build_windows("python", corpora, explainer.tokenizer, 1024, 1, 256, 0).stats.reshape(-1, 64)
    site = resolve_site(explainer.model, "mlp", {a.name: a for a in BUILTIN_ARCHITECTURES})
    top = top_activations(explainer.model, site, windows, k=3)
    strings = _token_strings(explainer.tokenizer, windows)
    neurons = [NeuronId(layer, int(top.values[layer, :, 0].argmax())) for layer in (5, 15, 25, 29)]
    answers = explainer.explain([top.records(n, strings) for n in neurons])
    assert len(answers) == 4
    assert all(len(a.split()) >= 2 for a in answers), answers  # words, not empty or one token
    assert torch.isfinite(top.values).all()
