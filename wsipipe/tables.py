"""The CAMELYON16 tables the stages exchange: one type, one writer and one reader each.

- Lesion detections, one CSV per slide: ``Confidence,X,Y`` rows (X, Y integer level-0 px), no
  header (the official parser has none). :class:`Detections`, :func:`write_lesion_csv`,
  :func:`read_lesion_csv`. Written by ``aggregate``; read by ``evaluate``, ``export``,
  ``explain`` and ``report``.
- Slide scores, ``slide_predictions.csv``: ``slide,probability,label[,score...]`` with that
  header (the organisers' ``Permutation_test.py`` reads it with pandas, which takes the header
  as column names); labels ``Tumor``/``Normal`` or empty. :class:`SlidePrediction`,
  :func:`write_slide_predictions`, :func:`read_slide_predictions`.
- Reference labels, ``reference.csv``: ``Test_001,Tumor,Macro`` / ``Test_002,Normal``, no
  header. :func:`write_reference` (``synth``), :func:`read_reference` (``evaluate``, ``report``).
- Slide dimensions, an ``evaluate`` input: ``slide,width,height`` (level-0 px), header
  optional. :func:`read_slide_dims_csv`.

The readers accept what the official tools and older wsipipe versions wrote: an optional
header line, blank lines, decimal coordinates (floored with a warning). Slide names lose
known file suffixes (:func:`wsipipe.slide.slide_key`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wsipipe.errors import ConfigError, EvaluationError
from wsipipe.slide import slide_key
from wsipipe.storage import is_url, location, output_exists, readable, writable
from wsipipe.types import PathLike

__all__ = [
    "Detections",
    "SlidePrediction",
    "is_number",
    "parse_label",
    "read_lesion_csv",
    "read_reference",
    "read_slide_dims_csv",
    "read_slide_predictions",
    "write_lesion_csv",
    "write_reference",
    "write_slide_predictions",
]

logger = logging.getLogger(__name__)

_POSITIVE = {"tumor", "tumour", "1", "true", "yes", "positive", "pos", "metastasis", "metastases"}
_NEGATIVE = {"normal", "0", "false", "no", "negative", "neg"}
_SLIDE_HEADER = ("slide", "probability", "label")


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Lesion detections of one slide, as columns; row ``i`` is ``(confidence[i], x[i], y[i])``.

    Iterating yields ``(confidence, x, y)`` tuples of Python ``float``, ``int``, ``int`` in row
    order; two tables are equal when their columns are.

    Attributes
    ----------
    confidence : (N,) float64 ndarray
        Detection confidence (NMS: the map value at the maximum).
    x, y : (N,) int64 ndarray
        Level-0 pixel coordinates (column, row).
    """

    confidence: npt.NDArray[np.float64]
    x: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        conf = np.asarray(self.confidence, np.float64)
        x = np.asarray(self.x, np.int64)
        y = np.asarray(self.y, np.int64)
        if conf.ndim != 1 or x.shape != conf.shape or y.shape != conf.shape:
            raise ConfigError(
                f"detections need three 1-D columns of one length; got confidence {conf.shape}, x {x.shape}, y {y.shape}"
            )
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def __iter__(self) -> Iterator[tuple[float, int, int]]:
        for c, x, y in zip(self.confidence.tolist(), self.x.tolist(), self.y.tolist(), strict=True):
            yield float(c), int(x), int(y)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self.confidence, other.confidence)
            and np.array_equal(self.x, other.x)
            and np.array_equal(self.y, other.y)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[float, int, int]]) -> Detections:
        """Build from ``(confidence, x, y)`` rows (level-0 px), in their order."""
        items = list(rows)
        if not items:
            return cls.empty()
        conf, xs, ys = zip(*items, strict=True)
        return cls(np.asarray(conf, np.float64), np.asarray(xs, np.int64), np.asarray(ys, np.int64))

    @property
    def points(self) -> npt.NDArray[np.int64]:
        """(N, 2) int64 level-0 ``(x, y)`` of each detection."""
        return np.stack([self.x, self.y], axis=1)

    def ranked(self, limit: int | None = None) -> Detections:
        """The detections by decreasing confidence (ties keep row order), the first ``limit`` of them."""
        order = np.argsort(-self.confidence, kind="stable")[:limit]
        return Detections(self.confidence[order], self.x[order], self.y[order])


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (tells a CSV header from a data row)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_label(text: str, *, where: str = "") -> bool:
    """Return True for tumour (``Tumor``, ``1``, ``true`` ...) and False for ``Normal``/``0`` (any case)."""
    low = text.strip().lower()
    if low in _POSITIVE:
        return True
    if low in _NEGATIVE:
        return False
    head = f"{where}: " if where else ""
    raise EvaluationError(f"{head}slide label {text!r} is neither Tumor nor Normal (nor 1/0)")


def _label_text(label: bool | None) -> str:
    return "" if label is None else ("Tumor" if label else "Normal")


def _write_rows(path: Path, rows: Iterable[Sequence[object]], tmp: Path) -> Path:
    """Write CSV rows (``\\n`` line ends) to ``tmp``, then rename it to ``path``: a reader never sees half a file.

    At an fsspec URL the rows are written to a local file put as one object (:func:`wsipipe.storage.writable`).
    """
    if is_url(path):
        with writable(path) as local:
            _write_rows(local, rows, local.with_name(tmp.name))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_lesion_csv(path: PathLike, detections: Detections) -> Path:
    """Write detections as a CAMELYON16 lesion CSV: ``Confidence,X,Y`` rows, no header.

    The official parser (``readCSVContent``) has no header handling and reads ``int(X)``,
    ``int(Y)``, so coordinates are written as integers and no header line is written;
    confidences are written as Python's shortest round-tripping ``repr``.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    rows = ([repr(c), x, y] for c, x, y in detections)
    return _write_rows(path, rows, path.with_name(f".{path.name}.tmp"))


def read_lesion_csv(path: PathLike) -> Detections:
    """Read a CAMELYON16 lesion CSV (``Confidence,X,Y`` rows, level-0 px).

    A first line that is not numeric (a header) and blank lines are skipped; extra columns
    are ignored. Decimal coordinates are floored with a warning (the official parser
    raises on them).

    Raises
    ------
    EvaluationError
        A row with fewer than three fields or a value that is not a finite number.
    """
    where_file = location(path)
    conf: list[float] = []
    xs: list[float] = []
    ys: list[float] = []
    decimals = 0
    with readable(path) as local, local.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and not is_number(row[0]):
                continue
            if len(row) < 3:
                raise EvaluationError(f"{where_file}, line {lineno}: expected Confidence,X,Y, got {','.join(row)!r}")
            try:
                c, x, y = (float(v) for v in row[:3])
            except ValueError:
                raise EvaluationError(
                    f"{where_file}, line {lineno}: Confidence,X,Y must be numbers, got {','.join(row[:3])!r}"
                ) from None
            if not all(math.isfinite(v) for v in (c, x, y)):
                raise EvaluationError(f"{where_file}, line {lineno}: non-finite value in {','.join(row[:3])!r}")
            if x != math.floor(x) or y != math.floor(y):
                decimals += 1
            conf.append(c)
            xs.append(math.floor(x))
            ys.append(math.floor(y))
    if decimals:
        logger.warning(
            "%s: %d detection(s) had decimal coordinates; floored to integer level-0 px", where_file, decimals
        )
    return Detections(np.asarray(conf, np.float64), np.asarray(xs, np.int64), np.asarray(ys, np.int64))


@dataclass(frozen=True, slots=True)
class SlidePrediction:
    """One row of ``slide_predictions.csv``.

    Attributes
    ----------
    slide : str
        Slide id (file stem).
    probability : float
        Slide score in [0, 1] (higher = more likely tumour); aggregate writes the maximum tile
        probability.
    label : bool or None
        True for tumour, False for normal, None when unknown (written as an empty field).
    scores : mapping of str to float
        Further score columns after ``label``, in column order (aggregate:
        ``top<k>_mean``, ``fraction_above``).
    """

    slide: str
    probability: float
    label: bool | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


def write_slide_predictions(path: PathLike, predictions: Sequence[SlidePrediction]) -> Path:
    """Write ``slide_predictions.csv``: header ``slide,probability,label[,score...]``, one row per slide.

    Labels are written ``Tumor``/``Normal`` (the CAMELYON16 reference spelling) or left empty;
    numbers as Python's shortest round-tripping ``repr``.

    Raises
    ------
    ConfigError
        A probability that is not finite, or rows with different score columns.
    """
    names = tuple(predictions[0].scores) if predictions else ()
    for p in predictions:
        if not math.isfinite(p.probability):
            raise ConfigError(f"slide {p.slide!r}: probability {p.probability} is not finite")
        if tuple(p.scores) != names:
            raise ConfigError(
                f"slide {p.slide!r} has score columns {list(p.scores)}, the first slide {list(names)}; "
                "every row of slide_predictions.csv needs the same columns"
            )
    header = [*_SLIDE_HEADER, *names]
    body = (
        [p.slide, repr(float(p.probability)), _label_text(p.label), *(repr(float(v)) for v in p.scores.values())]
        for p in predictions
    )
    path = Path(path)
    return _write_rows(path, [header, *body], path.with_name(path.name + ".tmp"))


@contextmanager
def _open_csv(path: PathLike, what: str) -> Iterator[Any]:
    """A text file object on a local CSV or one at an fsspec URL; EvaluationError naming it when missing."""
    if not output_exists(path):
        raise EvaluationError(f"{location(path)}: {what} not found")
    with readable(path) as local, local.open(newline="") as fh:
        yield fh


def read_slide_predictions(path: PathLike) -> dict[str, SlidePrediction]:
    """Read a slide-predictions CSV: ``slide,probability[,label[,score...]]``, header optional.

    Without a header only the first three columns are read; with one, the columns after
    ``label`` become :attr:`SlidePrediction.scores` (empty fields are left out).

    Returns
    -------
    dict
        ``{slide: SlidePrediction}`` in file order, slide names without known suffixes.

    Raises
    ------
    EvaluationError
        Missing file, a row without a probability, a value that is not a finite number, a
        label that is neither tumour nor normal, or a slide listed twice.
    """
    where_file = location(path)
    out: dict[str, SlidePrediction] = {}
    extra: list[str] = []
    with _open_csv(path, "slide predictions file") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            where = f"{where_file}, line {lineno}"
            if len(row) < 2:
                raise EvaluationError(f"{where}: expected slide,probability, got {','.join(row)!r}")
            if lineno == 1 and not is_number(row[1]):
                extra = [h.strip() for h in row[3:]]
                continue
            probability = _finite(row[1], where, "probability")
            scores = {k: _finite(v, where, k) for k, v in zip(extra, row[3:], strict=False) if v.strip()}
            name = slide_key(row[0])
            if name in out:
                raise EvaluationError(f"{where}: slide {name!r} appears twice")
            label = parse_label(row[2], where=where) if len(row) >= 3 and row[2].strip() else None
            out[name] = SlidePrediction(name, probability, label, scores)
    return out


def _finite(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EvaluationError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise EvaluationError(f"{where}: {what} {text!r} is not finite")
    return value


def write_reference(path: PathLike, labels: Mapping[str, bool], *, details: Mapping[str, str] | None = None) -> Path:
    """Write CAMELYON16 ``reference.csv``: ``slide,Tumor|Normal[,detail]`` rows, no header.

    Parameters
    ----------
    path : path-like
    labels : mapping
        ``{slide: is_tumor}`` in row order; names are written as given (CAMELYON16: ``Test_001``).
    details : mapping, optional
        A third column per slide (CAMELYON16: ``Macro``/``Micro`` for tumour slides).
    """
    details = details or {}
    rows = ([s, _label_text(t), details[s]] if details.get(s) else [s, _label_text(t)] for s, t in labels.items())
    path = Path(path)
    return _write_rows(path, rows, path.with_name(path.name + ".partial"))


def read_reference(path: PathLike) -> dict[str, bool]:
    """Read CAMELYON16 ``reference.csv`` (``slide,Tumor|Normal[,...]``) into ``{slide: is_tumor}``.

    A header line (second field not a label) is skipped. Slide names lose known suffixes.
    A per-slide overrides CSV (a header naming ``slide``, ``mpp`` and ``label``;
    :func:`wsipipe.slide.read_slide_overrides`) is read too: its labelled rows are the labels.

    Raises
    ------
    EvaluationError
        Missing file, a label that is neither tumour nor normal, or no rows (an overrides CSV:
        no row with a label).
    ConfigError
        A malformed per-slide overrides CSV.
    """
    where_file = location(path)
    with _open_csv(path, "reference label file") as fh:
        rows = list(csv.reader(fh))
    if {"slide", "mpp", "label"} <= {c.strip().lower().lstrip("\ufeff") for c in (rows[0] if rows else [])}:
        from wsipipe.slide import read_slide_overrides

        labels = read_slide_overrides(path).labels
        if not labels:
            raise EvaluationError(
                f"{where_file}: no row of this slide overrides CSV has a label; fill its label column"
            )
        return labels
    out: dict[str, bool] = {}
    for lineno, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip():
            continue
        low = row[1].strip().lower()
        if lineno == 1 and low not in _POSITIVE | _NEGATIVE:
            continue
        out[slide_key(row[0])] = parse_label(row[1], where=f"{where_file}, line {lineno}")
    if not out:
        raise EvaluationError(f"{where_file}: no slide,label rows found (expected e.g. Test_001,Tumor)")
    return out


def read_slide_dims_csv(path: PathLike) -> dict[str, tuple[int, int]]:
    """Read ``slide,width,height`` (level-0 px, header optional) into ``{slide: (width, height)}``."""
    where_file = location(path)
    out: dict[str, tuple[int, int]] = {}
    with _open_csv(path, "slide dimensions file") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if lineno == 1 and (len(row) < 3 or not is_number(row[1])):
                continue
            try:
                out[slide_key(row[0])] = (int(row[1]), int(row[2]))
            except (ValueError, IndexError):
                raise EvaluationError(
                    f"{where_file}, line {lineno}: expected slide,width,height with integer sizes"
                ) from None
    return out
