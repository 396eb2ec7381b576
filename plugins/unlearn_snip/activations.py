"""Activation records: every neuron's top-activating contexts, from one streamed pass.

For each neuron we keep the k probe windows where its maximum activation is highest, with the
activation of every token of those windows (float16 [L, N, k, T]: 29 MB for SmolLM2 with k = 5
and 64-token windows), merged batch by batch, so memory does not grow with the probe corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from unlearn_core import ActivationRecord, NeuronId, NeuronRecords, NeuronSite


@dataclass
class TopActivations:
    windows: Tensor  # long [W, T]: the probe windows
    values: Tensor  # float32 [L, N, k]: a kept window's maximum activation, descending
    index: Tensor  # long [L, N, k]: which probe window; -1 while fewer than k were seen
    acts: Tensor  # float16 [L, N, k, T]: activation of every token of the kept windows

    def records(self, neuron: NeuronId, strings: dict[int, str]) -> NeuronRecords:
        """The neuron's contexts as token strings (`strings`: id -> text) and activations."""
        out = NeuronRecords(neuron)
        for slot in range(self.index.shape[-1]):
            w = int(self.index[neuron.layer, neuron.index, slot])
            if w < 0:
                break
            ids = self.windows[w].tolist()
            tokens = [strings[i] for i in ids]
            acts = self.acts[neuron.layer, neuron.index, slot].float().tolist()
            out.records.append(ActivationRecord(tokens=tokens, activations=acts))
        return out


@torch.inference_mode()
def top_activations(model: nn.Module, site: NeuronSite, windows: Tensor, k: int = 5,
                    batch_size: int = 8, progress: bool = False) -> TopActivations:
    """Keep, for every neuron of `site`, the `k` windows (long [W, T]) it activates most on."""
    L, N = site.shape
    T = windows.shape[1]
    top = TopActivations(windows, torch.full((L, N, k), -torch.inf),
                         torch.full((L, N, k), -1, dtype=torch.long),
                         torch.zeros(L, N, k, T, dtype=torch.float16))
    batch_ids: list[Tensor] = [torch.empty(0, dtype=torch.long)]

    def make_hook(layer: int):
        def hook(acts: Tensor) -> None:
            ids = batch_ids[0]
            z = acts.reshape(len(ids), T, N).float().cpu()  # OPT hands [B*T, N]
            per_window = z.permute(2, 0, 1)  # [N, B, T]
            values = torch.cat([top.values[layer], per_window.amax(-1)], dim=1)  # [N, k + B]
            index = torch.cat([top.index[layer], ids.expand(N, -1)], dim=1)
            stored = torch.cat([top.acts[layer].float(), per_window], dim=1)  # [N, k + B, T]
            # stable sort: among equal maxima the earlier window wins, so results are reproducible
            keep = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
            top.values[layer] = values.gather(1, keep)
            top.index[layer] = index.gather(1, keep)
            top.acts[layer] = stored.gather(1, keep[..., None].expand(-1, -1, T)).half()

        return hook

    decoder = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    with site.hooks(make_hook):
        for start in tqdm(range(0, len(windows), batch_size), desc="activation records",
                          disable=not progress, leave=False):
            batch_ids[0] = torch.arange(start, min(start + batch_size, len(windows)))
            decoder(input_ids=windows[start:start + batch_size].to(device), use_cache=False)
    return top
