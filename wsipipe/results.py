"""What every batch stage's Result shares: per-item outcomes, failures and the partial-failure error.

A stage that works over a batch of slides or stores (tile, infer, aggregate, export, explain)
returns a frozen Result dataclass holding one outcome per item. Each outcome has a ``status``
(``"done"``, ``"skipped"`` or ``"failed"``) and an ``error`` (``"ErrorType: message"`` when
failed). :class:`BatchResult` turns those into :attr:`~BatchResult.failures`,
:attr:`~BatchResult.ok` and :meth:`~BatchResult.raise_for_failures`, so that the CLI and the
pipeline treat every stage's partial failure alike (exit status 3).

A Result class names three things as class variables: the field that holds the outcomes, the
outcome attribute that names an item in messages, and the words that end "N of M ...".

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Item:
...     path: str
...     status: str
...     error: str | None = None
>>> @dataclass(frozen=True)
... class DemoResult(BatchResult):
...     _ITEMS = "items"
...     _KEY = "path"
...     _FAILED = "items failed"
...     items: tuple[Item, ...]
>>> DemoResult((Item("a", "done"), Item("b", "failed", "ValueError: bad"))).failures
{'b': 'ValueError: bad'}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from wsipipe.errors import PartialFailureError
from wsipipe.storage import location

__all__ = ["FAILED", "BatchResult"]

FAILED = "failed"
"""The ``status`` of an item that failed."""


class BatchResult:
    """Mixin for stage Results over a batch of items (see the module docstring)."""

    _ITEMS: ClassVar[str]
    """Name of the field holding the per-item outcomes (a tuple)."""
    _KEY: ClassVar[str]
    """Outcome attribute that names the item (a path) in :attr:`failures`."""
    _FAILED: ClassVar[str]
    """Completes "N of M ..." in the partial-failure message, e.g. ``"slides failed to tile"``."""

    @property
    def _outcomes(self) -> Sequence[Any]:
        outcomes: Sequence[Any] = getattr(self, self._ITEMS)
        return outcomes

    @property
    def failures(self) -> dict[str, str]:
        """Failed items: item (path, as a string) -> ``"ErrorType: message"``."""
        return {location(getattr(o, self._KEY)): o.error or FAILED for o in self._outcomes if o.status == FAILED}

    @property
    def ok(self) -> bool:
        """Whether no item failed."""
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise :class:`~wsipipe.errors.PartialFailureError` (exit status 3) naming every failed item, if any."""
        PartialFailureError.raise_if_any(self.failures, len(self._outcomes), self._FAILED)
