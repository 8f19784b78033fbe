"""Errors that end a run with one line and a documented exit code instead of a traceback."""

from __future__ import annotations

from onboard.harness.result import ExitCode


class OnboardError(Exception):
    exit_code: ExitCode = ExitCode.ENVIRONMENT_ERROR


class BadInput(OnboardError):
    """The user's input is wrong: unknown model, not a causal LM, malformed data file, bad option."""

    exit_code = ExitCode.USAGE_ERROR


class EnvironmentProblem(OnboardError):
    """The machine cannot do what was asked: no network for a download, out of memory, no GPU."""

    exit_code = ExitCode.ENVIRONMENT_ERROR
