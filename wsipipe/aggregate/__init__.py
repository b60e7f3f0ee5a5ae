"""Aggregation: tile probabilities -> lesion coordinates (NMS) and slide scores."""

from __future__ import annotations

from wsipipe.aggregate.heatmap import (
    build_heatmap,
    colorize,
    heatmap_detections,
    heatmap_from_store,
    model_class_names,
    save_heatmap_png,
    slide_background,
    tumor_column,
    upsample_heatmap,
    write_heatmap_tiff,
)
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
from wsipipe.aggregate.stage import (
    AggregateParams,
    AggregateResult,
    SlideAggregate,
    aggregate_store,
    aggregate_stores,
    write_slide_scores,
)

__all__ = [
    "AggregateParams",
    "AggregateResult",
    "Detection",
    "ScoreMethod",
    "SlideAggregate",
    "SlidePrediction",
    "aggregate_store",
    "aggregate_stores",
    "build_heatmap",
    "colorize",
    "fraction_above",
    "heatmap_detections",
    "heatmap_from_store",
    "max_probability",
    "model_class_names",
    "nms",
    "radius_in_cells",
    "save_heatmap_png",
    "slide_background",
    "slide_score",
    "top_k_mean",
    "tumor_column",
    "upsample_heatmap",
    "write_heatmap_tiff",
    "write_lesion_csv",
    "write_slide_predictions",
    "write_slide_scores",
]
