"""Aggregation: tile probabilities -> lesion coordinates (NMS) and slide scores."""

from __future__ import annotations

from wsipipe.aggregate.heatmap import (
    HeatmapMode,
    build_heatmap,
    centre_geometry,
    centre_heatmap,
    colorize,
    heatmap_detections,
    heatmap_from_store,
    save_heatmap_png,
    slide_background,
    tumor_column,
    upsample_heatmap,
    write_heatmap_tiff,
)
from wsipipe.aggregate.nms import nms, radius_in_cells
from wsipipe.aggregate.scores import ScoreMethod, fraction_above, max_probability, slide_score, top_k_mean
from wsipipe.aggregate.stage import (
    AggregateParams,
    AggregateResult,
    SlideAggregate,
    aggregate_store,
    aggregate_stores,
)

__all__ = [
    "AggregateParams",
    "AggregateResult",
    "HeatmapMode",
    "ScoreMethod",
    "SlideAggregate",
    "aggregate_store",
    "aggregate_stores",
    "build_heatmap",
    "centre_geometry",
    "centre_heatmap",
    "colorize",
    "fraction_above",
    "heatmap_detections",
    "heatmap_from_store",
    "max_probability",
    "nms",
    "radius_in_cells",
    "save_heatmap_png",
    "slide_background",
    "slide_score",
    "top_k_mean",
    "tumor_column",
    "upsample_heatmap",
    "write_heatmap_tiff",
]
