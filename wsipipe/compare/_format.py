"""The comparison table as text: the paper's layouts (Table 1: Acc, AUC, #Params; Table 3: Precision, Recall)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TABLE_COLUMNS", "format_params", "format_table", "table_csv"]

#: Kind -> the (metric key, header, scale, decimals) of each printed column after "Methods", as in
#: ``003_d079139a1795bfd3.txt``: Table 1 in % with two decimals, Table 3 in % with one.
TABLE_COLUMNS: dict[str, tuple[tuple[str, str, float, int], ...]] = {
    "pcam": (("accuracy", "Acc", 100.0, 2), ("auc", "AUC", 100.0, 2), ("n_params", "#Params", 1.0, 0)),
    "hploc": (("precision", "Precision", 100.0, 1), ("recall", "Recall", 100.0, 1)),
}


def format_params(n: int) -> str:
    """A parameter count as the paper writes it: ``11.2M``, ``902K``, ``297K``, ``950``.

    Examples
    --------
    >>> format_params(11_177_025), format_params(296_364), format_params(902_432), format_params(950)
    ('11.2M', '296K', '902K', '950')
    """
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{round(n / 1e3):d}K"
    return str(n)


def _cell(value: Any, key: str, scale: float, decimals: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if key == "n_params":
        return format_params(int(value))
    return f"{float(value) * scale:.{decimals}f}"


def format_table(kind: str, rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """A Markdown table laid out like the paper's: ``Methods`` then the columns of :data:`TABLE_COLUMNS`.

    Parameters
    ----------
    kind : {"pcam", "hploc"}
        Which table.
    rows : sequence of mapping
        Each with ``label`` and the metric keys (fractions in [0, 1]; ``n_params`` an int);
        a missing or non-finite value prints as ``-``.
    title : str
        A line above the table (none when empty).

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    """
    if kind not in TABLE_COLUMNS:
        raise ValueError(f"unknown table kind {kind!r} (kinds: {', '.join(TABLE_COLUMNS)})")
    cols = TABLE_COLUMNS[kind]
    header = ["Methods", *(c[1] for c in cols)]
    body = [[str(r["label"]), *(_cell(r.get(k), k, s, d) for k, _, s, d in cols)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [line[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(line[1:], widths[1:], strict=True))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]) + "|"
    lines = [fmt(header), rule, *(fmt(b) for b in body)]
    return "\n".join(([title, ""] if title else []) + lines) + "\n"


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every row's scalar fields as CSV text (columns in first-seen order, unscaled fractions)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, Mapping | list | tuple)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in keys})
    return buf.getvalue()
