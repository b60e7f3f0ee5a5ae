"""Synthetic CAMELYON16-like data for demos, tests and benchmarks.

* :func:`make_slide` / :func:`make_test_slide`: one pyramidal tiled-JPEG TIFF of H&E-like
  lymph-node tissue (0.243 µm/px at level 0, opened by OpenSlide and tiffslide) and its
  ground truth (tissue islands, tumour lesions including an ITC and a close pair).
* :func:`make_dataset` with :class:`SynthParams`: the CAMELYON16 folder layout (slides,
  ASAP XML, ``reference.csv``), optionally PCam HDF5 patches; resumable.
* :func:`write_pcam`: PCam-format HDF5 from any annotated slides.

Everything is deterministic from a seed. See ``docs/synth.md``.
"""

from __future__ import annotations

from wsipipe.synth._geometry import ITC_DIAMETER_UM, MIN_SEPARATION_UM, PAIR_GAP_UM, Layout, SynthLesion
from wsipipe.synth._pcam import PCAM_SPLITS, PatchSource, pcam_paths, write_pcam
from wsipipe.synth._slide import CAMELYON16_MPP, SlideInfo, make_slide, make_test_slide, slide_layout
from wsipipe.synth.stage import DatasetInfo, SlideRecord, SynthParams, make_dataset

__all__ = [
    "CAMELYON16_MPP",
    "ITC_DIAMETER_UM",
    "MIN_SEPARATION_UM",
    "PAIR_GAP_UM",
    "PCAM_SPLITS",
    "DatasetInfo",
    "Layout",
    "PatchSource",
    "SlideInfo",
    "SlideRecord",
    "SynthLesion",
    "SynthParams",
    "make_dataset",
    "make_slide",
    "make_test_slide",
    "pcam_paths",
    "slide_layout",
    "write_pcam",
]
