"""Progress of long work: a tqdm bar on a terminal, periodic log lines elsewhere.

:func:`wsipipe.settings.progress_enabled` decides (``WSIPIPE_PROGRESS``, else whether stderr is a
terminal). When the bar is off (a run writing to a log file, a batch job), :class:`ProgressBar`
logs one INFO line every :func:`wsipipe.settings.progress_interval` seconds instead, e.g.::

    infer 1 store: 120/302 chunks, 30720/77188 tiles (40 %), 61.2 tiles/s, ETA 12 min 39 s

and a last line with the totals when it closes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, TypeVar

from wsipipe.settings import progress_enabled, progress_interval

__all__ = ["ProgressBar", "format_seconds", "progress"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def format_seconds(seconds: float) -> str:
    """A duration for people: ``0.42`` -> ``"0.4 s"``, ``125`` -> ``"2 min 05 s"``, ``7320`` -> ``"2 h 02 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60:02d} min"


class ProgressBar:
    """Counts work done: a tqdm bar when progress display is on, else INFO log lines every few seconds.

    Parameters
    ----------
    total : int
        Units of work (tiles, chunks, slides) to do.
    desc : str
        What is being done, first on every line.
    unit : str
        Name of one unit (``"tile"``); rates are units per second.
    chunks : int, optional
        Tasks the units come in (e.g. chunks of tiles), counted apart: ``update(n, chunks=1)``.
    log : logging.Logger, optional
        Where the lines go (default: this module's logger).
    interval : float, optional
        Seconds between log lines (default :func:`wsipipe.settings.progress_interval`); 0: every update.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "it",
        chunks: int | None = None,
        log: logging.Logger | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.chunks = total, desc, unit, chunks
        self.n = 0
        self.chunks_done = 0
        self._log = log or logger
        self._interval = progress_interval() if interval is None else interval
        self._start = self._last = time.monotonic()
        self._bar: Any = None
        if progress_enabled():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1, *, chunks: int = 0) -> None:
        """Record ``n`` more units (and ``chunks`` more chunks) done."""
        self.n += n
        self.chunks_done += chunks
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self._interval and self.n < self.total:
            self._last = now
            self._log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The state as one line: chunks, units, percentage, rate and ETA."""
        elapsed = max(1e-9, (time.monotonic() if now is None else now) - self._start)
        rate = self.n / elapsed
        parts = [f"{self.chunks_done}/{self.chunks} chunks"] if self.chunks is not None else []
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        parts.append(f"{self.n}/{self.total} {self.unit}s{share}")
        parts.append(f"{rate:.1f} {self.unit}s/s")
        if 0 < self.n < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.n) / rate)}")
        return f"{self.desc}: " + ", ".join(parts)

    def close(self) -> None:
        """Close the bar, or log the totals (when any work was counted)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.n:
            elapsed = time.monotonic() - self._start
            self._log.info("%s in %s", self.line(), format_seconds(elapsed))
            self.n = 0  # a second close logs nothing

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any
) -> Iterator[T]:
    """Yield ``iterable``'s items, counting them on a :class:`ProgressBar` (bar or log lines).

    ``total`` defaults to ``len(iterable)`` when it has one; ``kwargs`` go to :class:`ProgressBar`.
    """
    if total is None:
        total = len(iterable) if isinstance(iterable, Sized) else 0
    with ProgressBar(total, desc=desc, unit=unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)
