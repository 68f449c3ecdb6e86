"""The errors every `surgery` command reports as one line: bad input (exit code 2), and a write the machine
refused (a full disk, a read-only folder: exit code 1, with what was kept and how to go on), and work that ran
and failed every time it was tried (exit code 1)."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: the CLI prints it as one line and exits with code 2."""

    exit_code = 2


class WriteError(InputError):
    """A write that failed for a reason outside the input (no space left, no permission, a read-only
    filesystem): one line naming the path, the reason and what is kept; the CLI exits with code 1."""

    exit_code = 1


class RunFailed(InputError):
    """Work that ran and failed every time (each trial of a search's study): one line with the last error and
    what is kept; the CLI exits with code 1."""

    exit_code = 1
