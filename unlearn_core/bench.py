"""`unlearn bench`: every method on the same model, corpora and schedule, one record each.

    from unlearn_core import BenchConfig, run_bench
    records = run_bench(BenchConfig(methods=["selective", "random"]), out="results")
    # the paper's grid: every (method, site, importance), the model loaded once
    records = run_bench(config, out="results", sites=["mlp", "attn-value"], importances=["abs", "rms"])

It reads top to bottom as three steps:
1. `plan_grid`: every site, method name and option, and each site's schedule (from the model's
   config) are checked before anything heavy loads. A method with an `importance` option runs once
   per importance given; every other method (random) once per site;
2. `prepare`: check the corpora and evaluations, load the model, build disjoint statistics and
   evaluation windows, prepare the evaluations. Plugin commands (e.g. `unlearn explain`) reuse it,
   so they see the bench's exact model and windows; `Prepared.for_site` shares all of it with
   another site of the same model;
3. `run_method`, per (site, method): restore the original weights, let the scorer prepare on them,
   re-apply the deletions of a record being resumed, then `steps` times score, prune, evaluate and
   save the record (once per step). The unpruned model is evaluated once, for all methods and sites.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from .architectures import check_site_name, resolve_site
from .config import BenchConfig
from .corpora import CorpusWindows, build_windows, parse_spec
from .errors import MethodFailed, UsageError, plugin_code, plugin_failure, safe_name, unknown_name
from .evaluate import evaluate_tokens
from .interfaces import EvalContext, Evaluation, MethodSpec, PruneContext
from .masking import mask_windows
from .metrics import summarise
from .models import (
    LoadedModel,
    check_device,
    check_model_spec,
    check_window,
    empty_model,
    is_masked_lm,
    load_config,
    load_model,
)
from .plugins import Registry, load_plugins
from .protocol import Protocol, run_key
from .records import (
    CorpusInfo,
    EvaluationInfo,
    ModelInfo,
    PluginRef,
    RunRecord,
    SiteInfo,
    StepRecord,
    environment,
    first_error,
    library_versions,
    migrate,
    parse_record,
    read_json,
    save_record,
)
from .redact import redact
from .sites import NeuronSite, delete_mask, restore, snapshot
from .topk import GlobalTopK


@dataclass
class PlannedMethod:
    """One record's method: its spec, validated options, plugin, and the exact configuration the
    record keeps (its site, and the options as given, the grid's importance included)."""

    spec: MethodSpec
    options: BaseModel
    plugin: PluginRef
    config: BenchConfig

    @property
    def label(self) -> str:
        """How logs name it: the method, its importance in a grid, and its site."""
        importance = getattr(self.options, "importance", None)
        grid = f" {importance}" if "importance" in self.config.options.get(self.spec.name, {}) else ""
        return f"{self.spec.name}{grid} on {self.config.site}"


def _check_names(config: BenchConfig) -> None:
    if not config.methods:
        raise UsageError("name at least one method (--method)")
    for name in config.options:
        if name not in config.methods and name not in config.evals:
            raise UsageError(f"options given for '{name}', which is not in --method or --eval")
    for name in config.references:
        if name not in config.methods:
            raise UsageError(f"references given for '{name}', which is not in --method")


def plan_method(name: str, config: BenchConfig, registry: Registry) -> PlannedMethod:
    """Method `name` with its options validated (and cross-checked by its plugin) for `config`."""
    spec = registry.method(name)
    options = _options(spec.options, name, config)
    if spec.check is not None:
        plugin_code(registry, "methods", name, "checking its options", spec.check, options,
                    registry.components)
    return PlannedMethod(spec, options, plugin_ref(registry, "methods", name), config)


@dataclass
class SitePlan:
    """What runs on one site: its schedule (cumulative neurons after each step) and its records."""

    schedule: list[int]
    methods: list[PlannedMethod]


def plan_grid(config: BenchConfig, registry: Registry, sites: Sequence[str] = (),
              importances: Sequence[str] = ()) -> dict[str, SitePlan]:
    """Site -> what to run on it: every method once, and a method that has an `importance` option
    (selective) once per importance. Sites (default: config.site), names, options and each site's
    schedule are checked here, before the model loads."""
    _check_names(config)
    sites = list(sites) or [config.site]
    for kind, names in (("site", sites), ("importance", importances)):
        if twice := next((n for i, n in enumerate(names) if n in names[:i]), None):
            raise UsageError(f"{kind} '{twice}' is named twice in --{kind} {','.join(names)}")
    for site in sites:
        check_site_name(site, registry.architectures)
    graded = [n for n in config.methods if "importance" in registry.method(n).options.model_fields]
    if importances and not graded:
        raise UsageError(f"--importance: none of the methods ({', '.join(config.methods)}) has an "
                         "importance option")
    if importances and (given := [n for n in graded if "importance" in config.options.get(n, {})]):
        raise UsageError(f"the importance of '{given[0]}' is given twice: by --importance and by "
                         f"-O {given[0]}.importance; keep one")
    schedules = plan_schedules(config, registry, sites)
    planned: dict[str, SitePlan] = {}
    for site in sites:
        site_config = config.model_copy(update={"site": site})
        planned[site] = SitePlan(schedules[site], [])
        for name in config.methods:
            for importance in (importances if name in graded and importances else [None]):
                cell = site_config
                if importance is not None:
                    options = {**config.options, name: {**config.options.get(name, {}),
                                                         "importance": importance}}
                    cell = site_config.model_copy(update={"options": options})
                planned[site].methods.append(plan_method(name, cell, registry))
    return planned


def plugin_ref(registry: Registry, kind: str, name: str) -> PluginRef:
    info = registry.plugin_of(kind, name)
    return PluginRef(name=info.name, package=info.package, version=info.version)


def _options(model: type[BaseModel], name: str, config: BenchConfig) -> BaseModel:
    try:
        return model(**config.options.get(name, {}))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise UsageError(f"bad option {name}.{where}: {err['msg']}") from None


def plan_schedule(config: BenchConfig, registry: Registry) -> list[int]:
    """Cumulative neurons deleted after each step on config.site (see plan_schedules)."""
    return plan_schedules(config, registry, [config.site])[config.site]


def plan_schedules(config: BenchConfig, registry: Registry, sites: Sequence[str]) -> dict[str, list[int]]:
    """Each site's schedule, checked against the site's size read from the model's config (read
    once: seconds for a GGUF), so an impossible schedule fails before the weights load; so do a
    window longer than the model's context and a text harness asked of a masked LM."""
    model_config = load_config(config.model)
    check_window(model_config, config.window, config.model)
    harnesses = [e for e in config.evals if e != "tokens"]
    if harnesses and is_masked_lm(model_config):
        raise UsageError(f"model '{config.model}' is a masked language model: it is measured on its "
                         f"masked tokens only (--eval tokens), not by {', '.join(harnesses)}, which "
                         "score or generate text left to right")
    model = empty_model(model_config)
    schedules = {}
    for name in sites:
        site = resolve_site(model, name, registry.architectures)
        try:
            schedules[name] = config.schedule(site.n_layers * site.n_neurons)
        except UsageError as e:
            raise UsageError(f"site '{name}' ({site.n_layers} layers x {site.n_neurons}): {e}") from None
    return schedules


def plan_evaluations(config: BenchConfig, registry: Registry) -> dict[str, BaseModel]:
    """Validated options of every harness in --eval besides 'tokens' (which always runs)."""
    for name in config.evals:
        if name != "tokens" and name not in registry.evaluations:
            raise unknown_name("evaluation", name, ["tokens", *registry.evaluations])
    planned = {}
    for name in config.evals:
        if name != "tokens":
            spec = registry.evaluations[name]
            planned[name] = _options(spec.options, name, config)
            if spec.check is not None:
                plugin_code(registry, "evaluations", name, "checking its options", spec.check,
                            planned[name], registry.components)
    return planned


@dataclass
class Prepared:
    """What every method of a bench shares: the loaded model and its site, the windows, the
    schedule and the prepared evaluations. `original` holds the unpruned weights of the site."""

    config: BenchConfig
    registry: Registry
    loaded: LoadedModel
    site: NeuronSite
    windows: dict[str, CorpusWindows]
    schedule: list[int]
    evaluations: dict[str, Evaluation]
    evaluation_info: dict[str, EvaluationInfo]
    original: dict[str, Tensor]
    model_info: ModelInfo
    load_seconds: float
    progress: bool = True
    # {"base": StepRecord}: the unpruned model's evaluation, shared by every site (for_site)
    _shared: dict[str, StepRecord] = field(default_factory=dict, repr=False)

    def context(self, step: int, pruned: Tensor) -> PruneContext:
        """What a scorer or pruner sees at `step` (0: preparing on the unpruned weights)."""
        c = self.config
        return PruneContext(self.loaded.model, self.site, self.windows["forget"].stats,
                            self.windows["retain"].stats, pruned, step, c.seed, c.batch_size,
                            self.progress, tokenizer=self.loaded.tokenizer,
                            model_fingerprint=self.model_info.fingerprint, forget_spec=c.forget,
                            retain_spec=c.retain, components=self.registry.components,
                            bos=self.windows["forget"].bos,
                            forget_counted=self.windows["forget"].stats_counted,
                            retain_counted=self.windows["retain"].stats_counted)

    def evaluate(self, step: int, pruned: int, desc: str, started: float) -> StepRecord:
        """Every evaluation of the current weights, as the record of `step`."""
        forget, retain = (evaluate_tokens(self.loaded.model, self.windows[r].eval, self.config.batch_size,
                                          progress=self.progress, desc=f"{desc} eval {r}",
                                          targets=self.windows[r].eval_targets)
                          for r in ("forget", "retain"))
        others = {name: plugin_code(self.registry, "evaluations", name, "evaluate", e.evaluate,
                                    self.loaded.model)
                  for name, e in self.evaluations.items()}
        return StepRecord(step=step, pruned=pruned, pruned_fraction=pruned / self.site_neurons,
                          forget=forget, retain=retain, seconds=round(time.perf_counter() - started, 2),
                          evaluations=others)

    def base(self) -> StepRecord:
        """Step 0: the unpruned model, evaluated once for all methods and sites."""
        if "base" not in self._shared:
            restore(self.site, self.original)
            self._shared["base"] = self.evaluate(0, 0, "base", time.perf_counter())
        return self._shared["base"].model_copy()

    def for_site(self, name: str) -> Prepared:
        """The same model, windows and evaluations with another of its sites: call it while the
        weights are unpruned (its snapshot is that site's original weights)."""
        if name == self.site.name:
            return self
        site = resolve_site(self.loaded.model, name, self.registry.architectures)
        config = self.config.model_copy(update={"site": name})
        return replace(self, config=config, site=site, original=snapshot(site),
                       schedule=config.schedule(site.n_layers * site.n_neurons))

    @property
    def site_neurons(self) -> int:
        return self.site.n_layers * self.site.n_neurons

    def new_record(self, method: PlannedMethod) -> RunRecord:
        site = self.site
        # Secrets (api keys, URL credentials) stay in the options the method gets, out of records.
        c = method.config.model_copy(update={"options": redact(method.config.options),
                                             "references": redact(method.config.references)})
        return RunRecord(
            method=method.spec.name, plugin=method.plugin,
            options=redact(method.options.model_dump(mode="json")), config=c, model=self.model_info,
            site=SiteInfo(name=site.name, layers=site.n_layers, neurons_per_layer=site.n_neurons,
                          schedule=self.schedule),
            forget=CorpusInfo(**self.windows["forget"].identity()),
            retain=CorpusInfo(**self.windows["retain"].identity()),
            evaluations=self.evaluation_info, seed=c.seed, versions=library_versions(),
            environment=environment(), timings={"load_model": round(self.load_seconds, 2)})


def prepare(config: BenchConfig, registry: Registry | None = None, progress: bool = True,
            log=lambda msg: None, schedule: list[int] | None = None) -> Prepared:
    """Check the setup, then load the model, build the windows and prepare the evaluations.
    `schedule`: config.site's, when the caller planned it already (run_bench's plan_grid)."""
    registry = registry or load_plugins()
    check_model_spec(config.model)
    check_device(config.device)
    for spec in (config.forget, config.retain):
        corpus, argument = parse_spec(spec, registry.corpora)
        if corpus.check is not None:
            plugin_code(registry, "corpora", corpus.name, f"checking '{spec}'", corpus.check, argument)
    check_site_name(config.site, registry.architectures)
    eval_options = plan_evaluations(config, registry)
    schedule = schedule or plan_schedule(config, registry)

    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    log(f"loading model {config.model}")
    loaded = load_model(config.model, device=config.device, progress=progress)
    site = resolve_site(loaded.model, config.site, registry.architectures)
    load_seconds = time.perf_counter() - t0
    if config.schedule(site.n_layers * site.n_neurons) != schedule:
        raise UsageError(f"model '{config.model}' has {site.n_layers * site.n_neurons} '{config.site}' "
                         "neurons, not what its config said")
    windows = corpus_windows(config, registry, loaded.tokenizer, log, masked=loaded.masked)
    eval_ctx = EvalContext(loaded.model, loaded.tokenizer, config.seed, config.batch_size, progress,
                           config.forget, config.retain, registry.corpora, windows,
                           components=registry.components)
    evaluations = {name: plugin_code(registry, "evaluations", name, "prepare",
                                     registry.evaluations[name].prepare, options, eval_ctx)
                   for name, options in eval_options.items()}
    info = {name: EvaluationInfo(options=options.model_dump(mode="json"),
                                 figures=list(registry.evaluations[name].figures),
                                 plugin=plugin_ref(registry, "evaluations", name))
            for name, options in eval_options.items()}
    return Prepared(config, registry, loaded, site, windows, schedule, evaluations, info,
                    snapshot(site), ModelInfo(**loaded.identity()), load_seconds, progress)


def corpus_windows(config: BenchConfig, registry: Registry, tokenizer, log=lambda msg: None,
                   masked: bool = False) -> dict[str, CorpusWindows]:
    """The forget and retain corpora's statistics and evaluation windows for this configuration;
    for a masked LM, with 15 % of their tokens masked (masking.py)."""
    windows = {}
    for role, spec in (("forget", config.forget), ("retain", config.retain)):
        windows[role] = build_windows(spec, registry.corpora, tokenizer, config.tokens,
                                      config.eval_tokens, config.window, config.seed)
        if masked:
            windows[role] = mask_windows(windows[role], role, tokenizer, config.seed)
        log(f"{role}: {spec}: {windows[role].stats.numel()} statistics + "
            f"{windows[role].eval.numel()} evaluation tokens" + (", 15 % masked" if masked else ""))
    return windows


def run_bench(config: BenchConfig, out: str | Path | None = None, registry: Registry | None = None,
              progress: bool = True, log=None, sites: Sequence[str] = (),
              importances: Sequence[str] = ()) -> list[RunRecord]:
    """Run every (method, site, importance) of the grid (default: config.site and each method's
    own options), one record each, the model loaded once; see plan_grid."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    registry = registry or load_plugins()
    planned = plan_grid(config, registry, sites, importances)
    if out:
        check_out_dir(Path(out))
    first_site, first_plan = next(iter(planned.items()))
    first = prepare(config.model_copy(update={"site": first_site}), registry, progress, log,
                    schedule=first_plan.schedule)
    per_site = {site: first.for_site(site) for site in planned}  # snapshots of the unpruned weights
    records, failures = [], []
    for site, plan in planned.items():
        prepared, done = per_site[site], []
        for method in plan.methods:
            try:
                done.append(run_method(prepared, method, Path(out) if out else None, log))
            except _PluginError as e:  # finished steps stay saved; the other methods still run
                failures.append(str(e))
                log(f"{method.label}: failed; going on with the other methods")
        restore(prepared.site, prepared.original)
        if out and done:
            from .plots import plot_runs

            plot_runs(done, Path(out), prefix=f"plots-{Protocol.of(done[0]).key[:8]}-",
                      references=[(r.reference or {}).get("selectivity") for r in done])
        records += done
    if out and len(planned) > 1 and records:
        from .plots import plot_site_grid

        plot_site_grid(records, Path(out))
    if failures:
        raise MethodFailed(failures, records)
    return records


def run_method(prepared: Prepared, method: PlannedMethod, out: Path | None, log=lambda msg: None
               ) -> RunRecord:
    """Run (or resume) one method to its last step, saving the record after every step.

    Raises _PluginError when the method's own code fails; the steps it finished stay saved."""
    config, site, schedule = prepared.config, prepared.site, prepared.schedule
    restore(site, prepared.original)
    record = prepared.new_record(method)
    path = out / f"{safe_name(method.spec.name)}-{run_key(record)}.json" if out else None
    record, kept = _resume(path, prepared) or (record, None)
    reference = config.references.get(method.spec.name) or record.reference
    changed = reference != record.reference
    record.reference = reference

    scorer = _plugin_call(method, "building the scorer", method.spec.scorer, method.options)
    pruner = (_plugin_call(method, "building the pruner", method.spec.pruner, method.options)
              if method.spec.pruner else GlobalTopK())
    if hasattr(scorer, "prepare") and len(record.steps) <= config.steps:
        # On the original weights, before a resumed record's deletions are re-applied.
        _plugin_call(method, "prepare", scorer.prepare,
                     prepared.context(0, torch.zeros(site.shape, dtype=torch.bool)))
    if not record.steps:
        record.steps.append(prepared.base())
    elif len(record.steps) < config.steps + 1:
        log(f"{method.label}: resuming after step {len(record.steps) - 1}")
    pruned = _pruned_from(record, site.shape)
    delete_mask(site, pruned)
    for step in range(len(record.steps), config.steps + 1):
        started = time.perf_counter()
        ctx = prepared.context(step, pruned)
        count = schedule[step - 1] - int(pruned.sum())
        scores = _plugin_call(method, f"score at step {step}", scorer.score, ctx)
        pruned = _plugin_call(method, f"prune at step {step}", pruner.prune, ctx, scores, count)
        if hasattr(scorer, "info"):
            record.method_info = _plugin_call(method, f"info at step {step}", scorer.info)
        result = prepared.evaluate(step, int(pruned.sum()), f"{method.label} step {step}", started)
        record.steps.append(result)
        record.pruned_neurons = _indices(pruned)
        _finish(record, config)
        if path:
            save_record(record, path, keep=kept)
        changed = False
        log(f"{method.label} step {step}/{config.steps}: pruned {result.pruned_fraction:.1%}, "
            f"forget top-1 {result.forget.top1:.3f}, retain top-1 {result.retain.top1:.3f}")
    if changed and path:  # a finished record given a new --reference
        save_record(record, path, keep=kept)
    return record


class _PluginError(Exception):
    """A method's own code raised; the message is the one line the user sees."""


def _plugin_call(method: PlannedMethod, what: str, fn, *args):
    """Run a method's own code; whatever it raises becomes one line naming the method and its plugin."""
    try:
        return fn(*args)
    except UsageError:
        raise
    except Exception as e:
        raise _PluginError(plugin_failure("method", method.spec.name, method.plugin, what, e)) from e


def _finish(record: RunRecord, config: BenchConfig) -> None:
    record.summary = summarise([s.forget.top1 for s in record.steps],
                               [s.retain.top1 for s in record.steps])
    record.complete = len(record.steps) == config.steps + 1
    record.timings["method"] = round(sum(s.seconds for s in record.steps[1:]), 2)


def _indices(mask: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in mask]


def _pruned_from(record: RunRecord, shape: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, idx in enumerate(record.pruned_neurons):
        mask[layer, idx] = True
    return mask


def _resume(path: Path | None, prepared: Prepared) -> tuple[RunRecord, dict] | None:
    """The record at `path` (same protocol, method, options, seed and device: see run_key) and its
    JSON as read, whose fields this version does not know are kept when the record is saved again.
    A record that cannot be this run's, or names neurons the site lacks, is refused untouched."""
    if path is None or not path.exists():
        return None
    try:
        raw = read_json(path)
        record = parse_record(raw)
    except (ValueError, OSError) as e:
        raise UsageError(f"cannot resume from {path}: {_first_line(e)}; move it away to start over") from None
    problem = _resume_problem(record, prepared)
    if problem:
        raise UsageError(f"cannot resume from {path}: {problem}; move it away to start over")
    return record, migrate(raw)


def _first_line(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return f"not a run record: {first_error(e)}"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _resume_problem(record: RunRecord, prepared: Prepared) -> str | None:
    """Why `record` cannot be resumed by this run, or None."""
    site, config = prepared.site, prepared.config
    if len(record.steps) > config.steps + 1:
        return f"it has {len(record.steps) - 1} steps, more than --steps {config.steps}"
    if [s.step for s in record.steps] != list(range(len(record.steps))):
        return "its steps are not numbered 0, 1, 2, ..."
    pruned = record.pruned_neurons
    if len(pruned) not in (0, site.n_layers):
        return f"pruned_neurons has {len(pruned)} layers; the site has {site.n_layers}"
    for layer, idx in enumerate(pruned):
        bad = [i for i in idx if not 0 <= i < site.n_neurons]
        if bad:
            return (f"pruned_neurons names neuron {bad[0]} of layer {layer}; the site's neurons are "
                    f"0 to {site.n_neurons - 1}")
        if len(set(idx)) != len(idx):
            return f"pruned_neurons names a neuron of layer {layer} twice"
    expected = prepared.schedule[len(record.steps) - 2] if len(record.steps) > 1 else 0
    if sum(map(len, pruned)) != expected:
        return (f"pruned_neurons holds {sum(map(len, pruned))} neurons; after step "
                f"{len(record.steps) - 1} the schedule has {expected}")
    return None


def check_out_dir(out: Path) -> None:
    """--out must be a folder this process can write in (or can create): checked before the model
    loads, without creating anything yet."""
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"--out {out}: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write in '{existing}' (permission denied or read-only)")
