"""Small HTML builders of the report: escaping, number formats, badges, tables, figures."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["anchor", "esc", "figure", "fmt", "fmt_seconds", "html_table", "status_badge"]


def esc(value: Any) -> str:
    """``str(value)`` HTML-escaped, quotes included (safe in text and in attribute values)."""
    return html.escape(str(value), quote=True)


def anchor(slide_id: str) -> str:
    """The element id of a slide's card: ``slide-<id>`` with characters other than ``[A-Za-z0-9_.-]`` as ``_``."""
    return "slide-" + re.sub(r"[^A-Za-z0-9_.-]", "_", slide_id)


def fmt(value: Any, digits: int = 4) -> str:
    """A value for display: floats with ``digits`` decimals, None and non-finite as ``n/a``, bools as yes/no."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def fmt_seconds(value: Any) -> str:
    """Seconds as ``"4.2 s"`` or ``"2 min 05 s"``; ``n/a`` when not a number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "n/a"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes} min {secs:02d} s"


def status_badge(status: Any) -> str:
    """A coloured badge of a status or label (``done``, ``failed``, ``tumor`` …); ``missing`` when empty."""
    text = str(status) if status else "missing"
    cls = text if text.isidentifier() else "missing"
    return f'<span class="badge b-{esc(cls)}">{esc(text)}</span>'


def html_table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; cells are already-escaped HTML, columns in ``numeric`` right-aligned."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(uri: str | None, alt: str, caption: str = "") -> str:
    """A ``<figure>`` of the data URI ``uri`` with an escaped caption; empty when ``uri`` is None."""
    if not uri:
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'
