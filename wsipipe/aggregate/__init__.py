"""Aggregation: tile probabilities -> lesion coordinates (NMS) and slide scores."""

from __future__ import annotations

from wsipipe.aggregate.nms import Detection, nms, radius_in_cells, write_lesion_csv
from wsipipe.aggregate.scores import (
    ScoreMethod,
    SlidePrediction,
    fraction_above,
    max_probability,
    slide_score,
    top_k_mean,
    write_slide_predictions,
)

__all__ = [
    "Detection",
    "ScoreMethod",
    "SlidePrediction",
    "fraction_above",
    "max_probability",
    "nms",
    "radius_in_cells",
    "slide_score",
    "top_k_mean",
    "write_lesion_csv",
    "write_slide_predictions",
]
