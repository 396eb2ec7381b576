"""Errors a user can cause. The CLI turns a UsageError into one line on stderr and exit status 2."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from .redact import redact_text


class UsageError(Exception):
    """Bad input from the user: unknown name, bad path, bad number, corpus too small, ..."""


class MethodFailed(Exception):
    """Methods whose plugin code raised during a bench, one line each naming method and plugin.

    Raised after the other methods finished; `records` are theirs. The CLI exits with status 1.
    """

    def __init__(self, failures: list[str], records: list | None = None):
        super().__init__("; ".join(failures))
        self.failures = failures
        self.records = records or []


class PluginFailed(Exception):
    """A plugin's own code raised outside a method's steps (an evaluation, a corpus, a check): one
    line naming the plugin. The CLI exits with status 1: the input was fine, the plugin was not."""


_SINGULAR = {"methods": "method", "corpora": "corpus", "evaluations": "evaluation",
             "architectures": "architecture", "commands": "command"}


def plugin_code(registry: Any, kind: str, name: str, what: str, fn: Callable, *args: Any) -> Any:
    """`fn(*args)`, code that the plugin registering `name` in `kind` ('methods', 'corpora', ...)
    wrote: a UsageError passes through, anything else becomes a PluginFailed naming the plugin."""
    try:
        return fn(*args)
    except (UsageError, PluginFailed):
        raise
    except Exception as e:
        raise PluginFailed(plugin_failure(_SINGULAR.get(kind, kind), name, registry.plugin_of(kind, name),
                                          what, e)) from e


def plugin_failure(kind: str, name: str, plugin: Any, what: str, e: BaseException) -> str:
    """The one line for a crash in a plugin's code: "method 'x' (plugin 'p', package 1.0) failed in
    what: Type: message". `plugin` has .name, .package and .version."""
    return (f"{kind} '{name}' (plugin '{plugin.name}', {plugin.package} {plugin.version}) failed in "
            f"{what}: {one_line(e)}")


# What a name from a plugin (a method, an evaluation, a figure) may be: it becomes part of file names.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}")


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def safe_name(name: str) -> str:
    """`name` when it is safe in a file name (letters, digits, '_', '-', '.', '+'; no '..')."""
    if not is_safe_name(name):
        raise UsageError(f"name {name!r} cannot be part of a file name: use letters, digits, "
                         "'_', '-', '.' and '+' (at most 80, no '..')")
    return name


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """UsageError for an unknown name, naming the valid choices and the closest one."""
    choices = sorted(choices)
    valid = ", ".join(choices) if choices else "none installed"
    return UsageError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {valid}")


def one_line(e: BaseException) -> str:
    """'Type: first line of the message', what a user sees of an exception raised in plugin code."""
    text = redact_text(str(e)).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__
