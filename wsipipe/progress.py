"""Progress bars for long work (tqdm on stderr), switched by :func:`wsipipe.settings.progress_enabled`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from wsipipe.settings import progress_enabled

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when progress display is on; otherwise return it unchanged."""
    if not progress_enabled():
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, **kwargs)
