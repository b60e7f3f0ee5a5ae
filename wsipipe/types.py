"""Shared type aliases.

Coordinates follow openslide: ``XY`` is ``(x, y)`` (column, row) and ``WH`` is
``(width, height)``, both in pixels of the level named next to them (``_level0`` etc.).
numpy arrays are indexed ``[row, col]`` = ``[y, x]``.
"""

from __future__ import annotations

import os
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["WH", "XY", "BoolArray", "FloatArray", "PathLike", "RGBArray"]

XY: TypeAlias = tuple[int, int]
WH: TypeAlias = tuple[int, int]
PathLike: TypeAlias = str | os.PathLike[str]
RGBArray: TypeAlias = npt.NDArray[np.uint8]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
FloatArray: TypeAlias = npt.NDArray[np.floating]
