"""Exceptions a user sees as one-line messages (the CLI prints them and exits with code 2)."""
from __future__ import annotations


class PartsupError(Exception):
    """Base class: an error whose message is complete and meant for the user."""

    exit_code = 2


class RecipeError(PartsupError):
    """A recipe (or an override) is malformed, mistyped or names unknown things."""


class PluginError(PartsupError):
    """A plugin cannot be imported, raises while registering, or clashes with another."""


class DataError(PartsupError):
    """Input data is missing, unreadable or malformed (names the file and, where known, the line)."""


class CheckpointError(PartsupError):
    """A checkpoint or weight file cannot be read or does not fit the model."""
