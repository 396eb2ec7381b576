"""Token evaluation on held-out windows: top-1, top-10, loss and perplexity.

Causal LMs: every position but the last of a window predicts the next token; padding (attention
mask 0) is excluded. Masked LMs (`targets`, see masking.py): each masked position predicts the
token it hides. Perplexity is exp(mean NLL) over all predicted tokens (not a mean of per-window
perplexities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn
from tqdm.auto import tqdm


class TokenMetrics(BaseModel):
    top1: float
    top10: float
    loss: float  # mean negative log-likelihood, nats per token
    perplexity: float
    tokens: int  # predicted tokens


@torch.inference_mode()
def evaluate_tokens(model: nn.Module, windows: Tensor, batch_size: int = 8,
                    attention_mask: Tensor | None = None, progress: bool = False,
                    desc: str = "evaluate", targets: Tensor | None = None) -> TokenMetrics:
    """`targets` (long [W, T], -100 where not scored): a masked LM's windows, scored in place."""
    device = next(model.parameters()).device
    hits1 = hits10 = count = 0
    nll = 0.0
    for start in tqdm(range(0, len(windows), batch_size), desc=desc, disable=not progress,
                      leave=False):
        ids = windows[start:start + batch_size].to(device)
        am = None if attention_mask is None else attention_mask[start:start + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits.float()
        if targets is not None:
            target = targets[start:start + batch_size].to(device)
            valid = target != -100
        else:
            logits, target = logits[:, :-1], ids[:, 1:]
            valid = torch.ones_like(target, dtype=torch.bool) if am is None else (
                am[:, 1:].bool() & am[:, :-1].bool())
        logits, target = logits[valid], target[valid]  # [n, V], [n]
        nll += F.cross_entropy(logits, target, reduction="sum").double().item()
        top10 = logits.topk(10, dim=-1).indices
        hits1 += (top10[:, 0] == target).sum().item()
        hits10 += (top10 == target[:, None]).any(-1).sum().item()
        count += target.numel()
    if count == 0:
        raise ValueError("no tokens to evaluate")
    loss = nll / count
    return TokenMetrics(top1=hits1 / count, top10=hits10 / count, loss=loss,
                        perplexity=math.exp(loss), tokens=count)
