"""Whether the Hugging Face hub can be reached, decided once per process.

Without a network, transformers and datasets retry every request for 30-60 s and print each retry,
then say "couldn't connect". Deciding once lets a hub id or an `hf:` corpus that is not in the
local cache fail at once in one line, and puts the libraries in offline mode so that whatever is
cached loads without retries.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

_TRUE = {"1", "on", "yes", "true"}
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _env_true(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


@lru_cache(maxsize=1)
def hub_offline() -> bool:
    """True when the hub cannot be reached: offline mode is set (HF_HUB_OFFLINE, ...), or a
    connection to the hub's host fails within 3 s. Behind a proxy the hub is assumed reachable.
    When offline, the libraries are switched to offline mode for the rest of the process."""
    if _env_true("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        offline = True
    elif any(os.environ.get(n) for n in _PROXIES):
        offline = False
    else:
        url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        try:
            socket.create_connection((url.hostname or "huggingface.co",
                                      url.port or (80 if url.scheme == "http" else 443)), timeout=3).close()
            offline = False
        except OSError:
            offline = True
    if offline:
        _go_offline()
    return offline


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Libraries imported already read the environment at import time.
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        config = sys.modules["datasets"].config
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


def hub_cached(repo_id: str, filename: str, repo_type: str = "model") -> bool:
    """Whether `filename` of the hub repository is in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)
    except Exception:  # an id the hub would reject is not cached either
        return False


def dataset_cached(name: str) -> bool:
    """Whether a hub dataset has anything in the local caches (hub files or datasets' own)."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}"
    home = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return hub.is_dir() or (home / name.replace("/", "___")).is_dir()
