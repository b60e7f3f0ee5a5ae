"""Readers for the CSV files the CAMELYON16 evaluation exchanges.

- Lesion detections, one CSV per slide: ``Confidence,X,Y`` (X, Y level-0 px), no header in
  the official format; a header line is skipped here.
- Slide predictions: ``slide,probability[,label]``, header optional.
- Reference labels (``reference.csv``): ``Test_001,Tumor,Macro,...`` / ``Test_003,Normal``.
- Slide dimensions: ``slide,width,height`` (level-0 px), header optional.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsipipe.errors import EvaluationError
from wsipipe.slide import slide_key
from wsipipe.types import PathLike

__all__ = [
    "Detections",
    "is_number",
    "parse_label",
    "read_lesion_csv",
    "read_reference",
    "read_slide_dims_csv",
    "read_slide_predictions",
]

log = logging.getLogger(__name__)

_POSITIVE = {"tumor", "tumour", "1", "true", "yes", "positive", "pos", "metastasis", "metastases"}
_NEGATIVE = {"normal", "0", "false", "no", "negative", "neg"}


@dataclass(frozen=True, slots=True)
class Detections:
    """Lesion detections of one slide, in file order.

    Attributes
    ----------
    confidence : (N,) float64 ndarray
    x, y : (N,) int64 ndarray
        Level-0 pixel coordinates (column, row), floored when the file had decimals.
    """

    confidence: npt.NDArray[np.float64]
    x: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (tells a CSV header from a data row)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    path = Path(path)
    conf: list[float] = []
    xs: list[float] = []
    ys: list[float] = []
    decimals = 0
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and not is_number(row[0]):
                continue
            if len(row) < 3:
                raise EvaluationError(f"{path}, line {lineno}: expected Confidence,X,Y, got {','.join(row)!r}")
            try:
                c, x, y = (float(v) for v in row[:3])
            except ValueError:
                raise EvaluationError(
                    f"{path}, line {lineno}: Confidence,X,Y must be numbers, got {','.join(row[:3])!r}"
                ) from None
            if not all(math.isfinite(v) for v in (c, x, y)):
                raise EvaluationError(f"{path}, line {lineno}: non-finite value in {','.join(row[:3])!r}")
            if x != math.floor(x) or y != math.floor(y):
                decimals += 1
            conf.append(c)
            xs.append(math.floor(x))
            ys.append(math.floor(y))
    if decimals:
        log.warning("%s: %d detection(s) had decimal coordinates; floored to integer level-0 px", path, decimals)
    return Detections(np.asarray(conf, np.float64), np.asarray(xs, np.int64), np.asarray(ys, np.int64))


def parse_label(text: str, *, where: str = "") -> bool:
    """Return True for tumour (``Tumor``, ``1``, ``true`` ...) and False for ``Normal``/``0`` (any case)."""
    low = text.strip().lower()
    if low in _POSITIVE:
        return True
    if low in _NEGATIVE:
        return False
    head = f"{where}: " if where else ""
    raise EvaluationError(f"{head}slide label {text!r} is neither Tumor nor Normal (nor 1/0)")


def read_reference(path: PathLike) -> dict[str, bool]:
    """Read CAMELYON16 ``reference.csv`` (``slide,Tumor|Normal[,...]``) into ``{slide: is_tumor}``.

    A header line (second field not a label) is skipped. Slide names lose known suffixes.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: reference label file not found")
    out: dict[str, bool] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if len(row) < 2 or not row[0].strip():
                continue
            low = row[1].strip().lower()
            if lineno == 1 and low not in _POSITIVE | _NEGATIVE:
                continue
            out[slide_key(row[0])] = parse_label(row[1], where=f"{path}, line {lineno}")
    if not out:
        raise EvaluationError(f"{path}: no slide,label rows found (expected e.g. Test_001,Tumor)")
    return out


def read_slide_predictions(path: PathLike) -> tuple[dict[str, float], dict[str, bool]]:
    """Read a slide-predictions CSV: ``slide,probability[,label]``, header optional.

    Returns
    -------
    probabilities : dict
        ``{slide: probability}`` in file order.
    labels : dict
        ``{slide: is_tumor}`` for rows with a third, non-empty label column.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: slide predictions file not found")
    probs: dict[str, float] = {}
    labels: dict[str, bool] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise EvaluationError(f"{path}, line {lineno}: expected slide,probability, got {','.join(row)!r}")
            if lineno == 1 and not is_number(row[1]):
                continue
            try:
                value = float(row[1])
            except ValueError:
                raise EvaluationError(f"{path}, line {lineno}: probability {row[1]!r} is not a number") from None
            if not math.isfinite(value):
                raise EvaluationError(f"{path}, line {lineno}: probability {row[1]!r} is not finite")
            name = slide_key(row[0])
            if name in probs:
                raise EvaluationError(f"{path}, line {lineno}: slide {name!r} appears twice")
            probs[name] = value
            if len(row) >= 3 and row[2].strip():
                labels[name] = parse_label(row[2], where=f"{path}, line {lineno}")
    return probs, labels


def read_slide_dims_csv(path: PathLike) -> dict[str, tuple[int, int]]:
    """Read ``slide,width,height`` (level-0 px, header optional) into ``{slide: (width, height)}``."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: slide dimensions file not found")
    out: dict[str, tuple[int, int]] = {}
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if lineno == 1 and (len(row) < 3 or not is_number(row[1])):
                continue
            try:
                out[slide_key(row[0])] = (int(row[1]), int(row[2]))
            except (ValueError, IndexError):
                raise EvaluationError(
                    f"{path}, line {lineno}: expected slide,width,height with integer sizes"
                ) from None
    return out
