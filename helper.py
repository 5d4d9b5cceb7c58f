"""Shared utilities that fit nowhere else: errors, downloads, colouring, session config."""


class UserError(Exception):
    """A mistake in the user's input: main.py prints it as one line and exits non-zero."""
