"""Errors a user can cause. The CLI turns a UsageError into one line on stderr and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
