"""Masked language models (BERT, RoBERTa): which tokens are masked, once per bench.

A masked LM predicts tokens hidden behind its mask token, not the next one. For such a model the
bench replaces 15 % of the positions of every window (statistics and evaluation windows alike; a
leading BOS/<s> is never masked) by the mask token, chosen by a generator seeded by the bench's
seed, the corpus' role and the split: the same masks for every step and every method. Statistics
count the masked positions only, and the token metrics (top-1, top-10, loss, perplexity) score the
model's prediction of the original token at each masked position.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .corpora import CorpusWindows
from .errors import UsageError

MASK_SHARE = 0.15
IGNORE = -100  # target of a position that is not scored (the convention of torch's cross_entropy)
_SALT = {("forget", "stats"): 1, ("forget", "eval"): 2, ("retain", "stats"): 3, ("retain", "eval"): 4}


def mask_positions(windows: Tensor, seed: int, salt: int, skip_first: bool) -> Tensor:
    """bool [W, T]: round(15 %) of each window's positions (at least one), uniformly at random."""
    n, length = windows.shape
    first = int(skip_first)
    k = max(1, round(MASK_SHARE * (length - first)))
    g = torch.Generator().manual_seed(seed * 1_000_003 + salt)
    order = torch.rand(n, length - first, generator=g).argsort(dim=1)[:, :k] + first
    return torch.zeros(n, length, dtype=torch.bool).scatter_(1, order, True)


def mask_windows(windows: CorpusWindows, role: str, tokenizer, seed: int) -> CorpusWindows:
    """`windows` as a masked LM sees them: mask tokens in, the masked positions and targets kept."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise UsageError("the model is a masked language model, but its tokenizer has no mask token")
    parts = {}
    for split in ("stats", "eval"):
        ids = getattr(windows, split)
        masked = mask_positions(ids, seed, _SALT[(role, split)], windows.bos)
        parts[split] = (ids.masked_fill(masked, mask_id), masked, ids.masked_fill(~masked, IGNORE))
    return replace(windows, stats=parts["stats"][0], stats_counted=parts["stats"][1],
                   eval=parts["eval"][0], eval_targets=parts["eval"][2])
