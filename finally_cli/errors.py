"""Exceptions raised by the library; the CLI turns them into one-line messages."""

from __future__ import annotations


class FinallyError(Exception):
    """Base class of every error the library raises on purpose.

    Attributes:
        exit_code: the process exit code the CLI uses for this error.
    """

    exit_code = 1


class AudioError(FinallyError):
    """An input file cannot be read or holds unusable samples."""


class OutputError(FinallyError):
    """An output file cannot (or must not) be written."""


class CheckpointError(FinallyError):
    """A model folder or Hub repo cannot be resolved or loaded."""

    exit_code = 2


class ModelError(FinallyError):
    """A model produced unusable output (NaN/Inf) for an input."""


class ConfigError(FinallyError):
    """A configuration value or an option is invalid."""

    exit_code = 2


class TrainingError(FinallyError):
    """Training cannot go on (e.g. a non-finite loss); nothing is saved from the bad step."""


class FinallyWarning(UserWarning):
    """Something works but is probably not what the user wants; the CLI prints one line."""
