"""Errors that are the user's to fix: the CLI prints them without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something in the user's config, files or environment is wrong; the message says what."""


class ConfigError(UserError):
    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


class ModelError(UserError):
    """The model file is missing, unreadable or does not have the streaming interface."""


class SourceError(UserError):
    """A camera source cannot be opened or read."""
