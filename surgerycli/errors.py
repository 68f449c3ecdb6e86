"""The input error every `surgery` command reports as one line with exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: the CLI prints it as one line and exits with code 2."""
