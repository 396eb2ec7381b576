"""Statistics pass vs a plain forward pass of the same model on the same windows, side by side.

    python benchmarks/stats_throughput.py                  # speed: tokens/s of both, and the ratio
    python benchmarks/stats_throughput.py --memory         # peak RSS of the pass at 1x and 4x tokens

Speed: the plain pass is `model(input_ids)` (decoder + LM head, what any evaluation runs); ours
is `collect_statistics` (decoder only, hooks accumulating freq/abs/rms/std of all 46,080 MLP
neurons); the decoder alone with no hooks is the ceiling of any pass that skips the head. Passes
alternate, `--repeats` times each, and the best of each is reported, so all see the same
machine state. Memory: each size runs in a fresh process that resets its peak resident set size after loading
the model (Linux /proc/self/clear_refs) and reports the peak reached during the pass.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.corpora import BUILTIN_CORPORA, build_windows
from unlearn_core.models import load_model
from unlearn_core.stats import collect_statistics

CORPORA = {c.name: c for c in BUILTIN_CORPORA}
ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}


def _setup(model_spec: str, tokens: int, window: int):
    loaded = load_model(model_spec)
    windows = build_windows("python", CORPORA, loaded.tokenizer, tokens, window, window, 0).stats
    site = resolve_site(loaded.model, "mlp", ARCHS)
    return loaded.model, site, windows


@torch.inference_mode()
def plain_forward(model, windows, batch_size):
    for start in range(0, len(windows), batch_size):
        model(input_ids=windows[start:start + batch_size], use_cache=False)


@torch.inference_mode()
def decoder_only(model, windows, batch_size):
    for start in range(0, len(windows), batch_size):
        model.base_model(input_ids=windows[start:start + batch_size], use_cache=False)


def speed(args) -> dict:
    model, site, windows = _setup(args.model, args.tokens, args.window)
    n = windows.numel()
    plain_forward(model, windows[: args.batch_size], args.batch_size)  # warm-up
    passes = {
        "plain_forward": lambda: plain_forward(model, windows, args.batch_size),
        "statistics": lambda: collect_statistics(model, site, windows, batch_size=args.batch_size),
        # The ceiling for any statistics pass that skips the LM head: the decoder with no hooks.
        "decoder_only": lambda: decoder_only(model, windows, args.batch_size),
    }
    times: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(args.repeats):
        for name, run in passes.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    tps = {k: n / min(v) for k, v in times.items()}
    return {"model": args.model, "tokens": n, "batch_size": args.batch_size, "window": args.window,
            "threads": torch.get_num_threads(), "repeats": args.repeats,
            "plain_forward_tokens_per_s": round(tps["plain_forward"], 1),
            "statistics_tokens_per_s": round(tps["statistics"], 1),
            "decoder_only_tokens_per_s": round(tps["decoder_only"], 1),
            "ratio": round(tps["statistics"] / tps["plain_forward"], 3),
            "ceiling_ratio": round(tps["decoder_only"] / tps["plain_forward"], 3)}


def _vm_hwm_mib() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(args) -> dict:
    model, site, windows = _setup(args.model, args.tokens, args.window)
    after_load = _vm_hwm_mib()
    # Reset the peak (Linux: writing 5 to clear_refs), so the next peak is the pass's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    collect_statistics(model, site, windows, batch_size=args.batch_size)
    return {"tokens": windows.numel(), "peak_rss_mib_loading": round(after_load, 1),
            "peak_rss_mib": round(_vm_hwm_mib(), 1)}


def memory(args) -> dict:
    runs = []
    for tokens in (args.tokens, 4 * args.tokens):
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--tokens", str(tokens),
               "--window", str(args.window), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = runs
    return {"model": args.model, "runs": runs,
            "peak_ratio_4x_vs_1x": round(large["peak_rss_mib"] / small["peak_rss_mib"], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    result = memory_child(args) if args.child else memory(args) if args.memory else speed(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
