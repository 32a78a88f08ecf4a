"""Errors the analysis raises for the user, each carrying the CLI exit code it maps to."""

from __future__ import annotations


class AnalysisError(Exception):
    """A problem the user can act on; the CLI prints its message without a traceback."""

    exit_code: int = 1


class BadInputError(AnalysisError):
    """An argument names something that does not exist or is malformed (CLI exit code 2)."""

    exit_code = 2


class UnknownExperimentError(BadInputError):
    """No experiment of that name in the tracking store (or no tracking store at all)."""


class EmptyExperimentError(AnalysisError):
    """The experiment exists but holds no trial runs yet (CLI exit code 1)."""
