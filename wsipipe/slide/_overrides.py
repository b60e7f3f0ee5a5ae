"""Per-slide overrides: a CSV that fixes a batch of slides' level-0 µm/px (and gives their labels).

Scanner exports (NDPI, some SVS and plain TIFF) often record no resolution or a wrong one.
Instead of editing the files, list the right value per slide::

    slide,mpp,label
    tumor_001.tif,0.243,tumor
    /data/normal_002.ndpi,0.2265,normal
    s3://bucket/slides/test_003.svs,0.25,

Columns (a header line names them, in any order, any case):

* ``slide`` (required): a slide id, a file name, a path or an fsspec URL. Folders and URL
  schemes are ignored: the row names the slide whose :func:`~wsipipe.slide.slide_id` equals
  :func:`~wsipipe.slide.slide_key` of the cell, compared without regard to case
  (``Tumor_001``, ``tumor_001.tif``, ``/data/tumor_001.tif`` and ``s3://b/tumor_001.tif`` are one
  slide). A DICOM WSI slide may be named by its slide id, its directory or an instance ``.dcm`` in it.
* ``mpp`` (required): the level-0 µm/px, a positive number within :data:`MPP_RANGE`.
* ``label`` (optional): the slide-level reference label, ``tumor``/``normal`` or ``1``/``0``
  (read by :func:`wsipipe.tables.parse_label`); empty for unknown.

Without a header, the columns are ``slide,mpp[,label]`` (recognised by a number in the first
line's second field). Blank lines and lines starting with ``#`` are skipped.

A row's ``mpp`` is passed to :func:`~wsipipe.slide.open_slide` as ``mpp=``, so it wins over
the slide's metadata **and** over a global value (``--mpp`` / ``--slide-mpp`` /
``TileParams.slide_mpp``); slides without a row keep the global value, then their metadata.
A row naming no slide of a batch is logged as a warning and ignored; the batch goes on.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wsipipe.errors import ConfigError, WsipipeError
from wsipipe.slide._files import slide_id, slide_key
from wsipipe.slide._tiff import MPP_RANGE
from wsipipe.storage import as_url, is_url, redact_url

if TYPE_CHECKING:
    from wsipipe.types import PathLike

__all__ = ["SlideOverride", "SlideOverrides", "read_slide_overrides"]

logger = logging.getLogger(__name__)

_COLUMNS = ("slide", "mpp", "label")
_FORMAT = "columns slide,mpp[,label], e.g. 'tumor_001.tif,0.25,tumor'"


@dataclass(frozen=True)
class SlideOverride:
    """One row of a per-slide overrides CSV."""

    slide: str
    """The slide id the row names (:func:`~wsipipe.slide.slide_key` of its ``slide`` cell)."""
    mpp: float
    """Level-0 µm/px to use for the slide."""
    label: bool | None
    """Slide-level reference label: ``True`` tumour, ``False`` normal, ``None`` not given."""
    file: str
    """The CSV the row comes from (a URL without credentials)."""
    line: int
    """The row's line number in :attr:`file` (1-based)."""

    @property
    def source(self) -> str:
        """``"<file>:<line>"``: where the value came from (recorded in stores as the MPP's source)."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class SlideOverrides(Mapping[str, SlideOverride]):
    """The rows of a per-slide overrides CSV, by slide id (a read-only mapping).

    Keys are the slide ids the rows name, as written (``slide_key`` of the cell); look a
    slide up with :meth:`match` (a path, URL or id), which compares without regard to case.
    """

    file: str
    """The CSV the rows come from."""
    rows: Mapping[str, SlideOverride]
    """``{slide id: row}`` in file order."""
    _index: dict[str, SlideOverride] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {_fold(key): row for key, row in self.rows.items()})

    def __getitem__(self, key: str) -> SlideOverride:
        return self.rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def match(self, slide: PathLike) -> SlideOverride | None:
        """The row for a slide (a path, a URL or a slide id), or ``None`` when no row names it.

        Raises
        ------
        ConfigError
            If two rows name the same slide (a DICOM slide named by its directory in one row and
            by its series description in another).
        """
        keys = _slide_keys(slide)
        found = {id(row): row for key in keys if (row := self._index.get(key)) is not None}
        if len(found) > 1:
            first, second = sorted(found.values(), key=lambda r: r.line)[:2]
            raise ConfigError(
                f"{self.file}, lines {first.line} and {second.line}: both rows name slide {_show(slide)!r} "
                f"({first.slide!r}, {second.slide!r}); keep one row per slide"
            )
        return next(iter(found.values()), None)

    def mpp(self, slide: PathLike, default: float | None = None) -> float | None:
        """The level-0 µm/px to open ``slide`` with: its row's ``mpp``, else ``default`` (a global value)."""
        row = self.match(slide)
        return row.mpp if row is not None else default

    def unmatched(self, slides: Iterable[PathLike]) -> list[SlideOverride]:
        """The rows that name none of ``slides`` (checking every slide for rows that name it twice)."""
        used = {id(row) for s in slides if (row := self.match(s)) is not None}
        return [row for row in self.rows.values() if id(row) not in used]

    def warn_unmatched(self, slides: Iterable[PathLike]) -> list[SlideOverride]:
        """Log a warning for each row naming none of ``slides``; return those rows."""
        rows = self.unmatched(slides)
        for row in rows:
            logger.warning(
                "%s, line %d: slide %r matches no slide of this batch; row ignored (check the name, or remove the row)",
                row.file,
                row.line,
                row.slide,
            )
        return rows

    @property
    def labels(self) -> dict[str, bool]:
        """``{slide id: is_tumor}`` for the rows with a label, in the form of :func:`wsipipe.tables.read_reference`."""
        return {key: row.label for key, row in self.rows.items() if row.label is not None}


def _fold(key: str) -> str:
    return key.casefold()


def _show(slide: PathLike) -> str:
    text = str(slide)
    return redact_url(text) if is_url(text) else text


def _cell_key(cell: str) -> str:
    """The slide id a ``slide`` cell names: ``slide_key`` of its last path component (an instance names its folder)."""
    text = cell.strip()
    url = as_url(text)
    if url is not None:
        text = url.split("?", 1)[0].split("#", 1)[0]
    path = Path(text.replace("\\", "/"))
    if path.suffix.lower() == ".dcm" and path.parent.name:
        return path.parent.name
    return slide_key(path.name)


def _slide_keys(slide: PathLike) -> set[str]:
    """The (case-folded) names a slide answers to: its slide id and the key of its file or directory name."""
    text = str(slide)
    keys = {_fold(_cell_key(text))}
    if is_url(text) or Path(text).exists():
        keys.add(_fold(slide_id(slide)))
    return keys


def read_slide_overrides(path: PathLike) -> SlideOverrides:
    """Read a per-slide overrides CSV (``slide,mpp[,label]``; see the module docs).

    Parameters
    ----------
    path : path-like
        A local CSV file or an fsspec URL to one (UTF-8, a byte order mark is allowed).

    Returns
    -------
    SlideOverrides
        The rows by slide id, in file order.

    Raises
    ------
    ConfigError
        One line naming the file (and line) and what to do: the file is missing or unreadable;
        the header lacks ``slide`` or ``mpp`` or names an unknown column; a row has no slide, an
        mpp that is not a positive number within :data:`MPP_RANGE` µm/px, or a label that is
        neither tumour nor normal; two rows name the same slide; there are no rows.
    """
    from wsipipe.storage import open_input

    url = as_url(path)
    file = redact_url(url) if url is not None else str(path)
    if url is None and not Path(path).is_file():
        raise ConfigError(
            f"slide overrides file {file!r} not found; give the path of a CSV with {_FORMAT} "
            "(--slide-overrides, TileParams.slide_overrides)"
        )
    try:
        with open_input(url or path) as handle:
            text = handle.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read slide overrides file {file!r}: {err}; give a UTF-8 CSV with {_FORMAT}") from err
    except WsipipeError:
        raise
    except Exception as err:  # a file system library's own error (an unreachable endpoint ...)
        raise ConfigError(
            f"cannot read slide overrides file {file!r}: {type(err).__name__}: {err}; check the URL and credentials"
        ) from err
    lines = [
        (n, row)
        for n, row in enumerate(csv.reader(io.StringIO(text)), start=1)
        if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if not lines:
        raise ConfigError(f"{file}: no rows; write a header and one row per slide, {_FORMAT}")
    columns, lines = _columns(file, lines)
    rows: dict[str, SlideOverride] = {}
    seen: dict[str, SlideOverride] = {}
    for n, cells in lines:
        row = _row(file, n, cells, columns)
        other = seen.get(_fold(row.slide))
        if other is not None:
            raise ConfigError(
                f"{file}, line {n}: slide {row.slide!r} already has a row (line {other.line}); keep one row per slide"
            )
        seen[_fold(row.slide)] = rows[row.slide] = row
    if not rows:
        raise ConfigError(f"{file}: a header but no rows; add one row per slide, {_FORMAT}")
    return SlideOverrides(file, rows)


def _columns(file: str, lines: list[tuple[int, list[str]]]) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Column indices by name, and the data lines (without the header)."""
    from wsipipe.config import suggest

    n, first = lines[0]
    names = [c.strip().lower() for c in first]
    if "slide" not in names and len(first) >= 2 and _is_number(first[1]):  # no header: slide,mpp[,label]
        return {name: i for i, name in enumerate(_COLUMNS)}, lines
    for i, name in enumerate(names):
        if name not in _COLUMNS:
            hint = suggest(name, _COLUMNS) if name else ""
            raise ConfigError(
                f"{file}, line {n}: unknown column {first[i].strip()!r} (column {i + 1}){hint}; "
                f"the header names {', '.join(_COLUMNS)} (label optional)"
            )
        if names.index(name) != i:
            raise ConfigError(f"{file}, line {n}: column {name!r} appears twice; name each column once")
    for name in _COLUMNS[:2]:
        if name not in names:
            raise ConfigError(f"{file}, line {n}: the header has no {name!r} column; it must name {_FORMAT}")
    return {name: i for i, name in enumerate(names)}, lines[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _row(file: str, n: int, cells: list[str], columns: Mapping[str, int]) -> SlideOverride:
    from wsipipe.tables import parse_label

    def cell(name: str) -> str:
        i = columns.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    where = f"{file}, line {n}"
    if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns) :]):
        raise ConfigError(f"{where}: {len(cells)} fields, the header names {len(columns)}; check the commas")
    name = cell("slide")
    if not name or not _cell_key(name):
        raise ConfigError(f"{where}: no slide name; write the slide's id, file name, path or URL first")
    text = cell("mpp")
    try:
        mpp = float(text)
    except ValueError:
        mpp = math.nan
    if not (math.isfinite(mpp) and mpp > 0):
        raise ConfigError(f"{where}: mpp {text!r} for slide {name!r} is not a positive number of µm/px (e.g. 0.25)")
    if not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        raise ConfigError(
            f"{where}: mpp {mpp:g} for slide {name!r} is outside {MPP_RANGE[0]:g}-{MPP_RANGE[1]:g} µm/px; "
            "write micrometres per pixel (0.25 at 40x, 0.5 at 20x), not nm or mm"
        )
    label_text = cell("label")
    label: bool | None = None
    if label_text:
        try:
            label = parse_label(label_text)
        except WsipipeError as err:
            raise ConfigError(f"{where}: {err}; write tumor/normal or 1/0, or leave it empty") from err
    return SlideOverride(_cell_key(name), mpp, label, file, n)
