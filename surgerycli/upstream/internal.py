"""One upstream internal, and how to tell that it is still there (`surgerycli.upstream` lists them all)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Internal:
    """One upstream internal: its dotted name, what this project needs it for, and where it is found.

    `owner()` returns the class or module that holds it (imported only when checked); `params`, for a
    callable, the leading parameter names after `self` that the code passes or overrides with. An attribute
    that instances set in `__init__` (`instance=True`) is checked on an instance the test builds.
    """

    library: str
    name: str  # e.g. "transformers.Trainer._save_checkpoint"
    purpose: str
    owner: Callable[[], object]
    attribute: str
    params: tuple[str, ...] | None = None
    instance: bool = False

    def problem(self, holder: object | None = None) -> str | None:
        """Why the internal is gone or changed (None: as the code expects). `holder`: for an instance
        attribute, an instance of the owner class."""
        target = holder if self.instance else self.owner()
        if not hasattr(target, self.attribute):
            return f"{self.name} is gone (needed for: {self.purpose})"
        if self.params is not None:
            found = [p for p in inspect.signature(getattr(target, self.attribute)).parameters if p != "self"]
            if tuple(found[:len(self.params)]) != self.params:
                return (f"{self.name} changed its parameters: expected {', '.join(self.params)} first, found "
                        f"{', '.join(found) or 'none'} (needed for: {self.purpose})")
        return None
