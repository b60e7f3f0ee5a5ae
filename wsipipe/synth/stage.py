"""``make_dataset``: a synthetic dataset in the CAMELYON16 folder layout.

Layout written under ``out_dir`` (the real CAMELYON16 release, with its two
``lesion_annotations.zip`` archives unpacked in place)::

    training/normal/normal_001.tif ...
    training/tumor/tumor_001.tif ...
    training/lesion_annotations/tumor_001.xml ...     ASAP XML, tumour group "_0"
    testing/images/test_001.tif ...                    tumour and normal slides mixed
    testing/lesion_annotations/test_002.xml ...        one per tumour test slide
    testing/reference.csv                              Test_001,Tumor,Micro / Test_002,Normal
    pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5   (when params.pcam > 0)
    dataset.json                                       parameters, slides, lesions; "complete" last

Every file is written under a temporary name and renamed when whole, so a rerun with the
same parameters skips what exists and finishes the rest. A folder made with other parameters
is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsipipe.annotations import TUMOR, Annotation, write_asap_xml
from wsipipe.config import config_hash, to_dict
from wsipipe.errors import ConfigError, DatasetError
from wsipipe.progress import progress
from wsipipe.synth._geometry import Layout
from wsipipe.synth._pcam import PatchSource, pcam_paths, write_pcam
from wsipipe.synth._slide import CAMELYON16_MPP, SlideInfo, make_slide, slide_layout
from wsipipe.types import PathLike

__all__ = ["DatasetInfo", "SlideRecord", "SynthParams", "make_dataset"]

logger = logging.getLogger(__name__)

_FORMAT = "wsipipe-synth-camelyon16"
_VERSION = 1
_MACRO_UM = 2000.0  # CAMELYON16: a macro-metastasis is larger than 2 mm


@dataclass(frozen=True, kw_only=True)
class SynthParams:
    """Parameters of :func:`make_dataset` (the ``synth`` pipeline stage).

    Attributes
    ----------
    n_train_normal, n_train_tumor : int
        Slides in ``training/normal`` and ``training/tumor``.
    n_test_normal, n_test_tumor : int
        Normal and tumour slides mixed in ``testing/images``.
    size : (int, int)
        Level-0 (width, height) of every slide, px.
    seed : int
        Master seed: slide layouts, test order, textures and PCam sampling derive from it.
    mpp : float
        Level-0 µm/px.
    quality : int
        JPEG quality of the tiles.
    tissue_fraction : float
        Approximate fraction of each slide covered by tissue.
    pcam : int
        Patches in the PCam train split (valid and test get a quarter each, at least 2);
        0 writes no PCam files.
    canvas_px : int
        Side of the periodic texture canvas at level 0, px (a power of two >= 256): the
        texture repeats every ``canvas_px * mpp`` µm; smaller is faster to draw.
    """

    n_train_normal: int = 2
    n_train_tumor: int = 2
    n_test_normal: int = 1
    n_test_tumor: int = 1
    size: tuple[int, int] = (12_000, 9_000)
    seed: int = 0
    mpp: float = CAMELYON16_MPP
    quality: int = 80
    tissue_fraction: float = 0.35
    pcam: int = 0
    canvas_px: int = 2048

    def __post_init__(self) -> None:
        for name in ("n_train_normal", "n_train_tumor", "n_test_normal", "n_test_tumor", "pcam"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} = {getattr(self, name)} must be >= 0")
        if len(self.size) != 2 or min(self.size) < 1024:
            raise ConfigError(f"size = {self.size} must be (width, height) of at least 1024 x 1024 px")
        if not 0.05 < self.tissue_fraction < 0.8:
            raise ConfigError(f"tissue_fraction = {self.tissue_fraction} must lie in (0.05, 0.8)")
        if self.canvas_px < 256 or self.canvas_px & (self.canvas_px - 1):
            raise ConfigError(f"canvas_px = {self.canvas_px} must be a power of two >= 256")
        if self.pcam and (self.n_train_tumor == 0 or self.n_test_tumor == 0):
            raise ConfigError("pcam > 0 needs tumour slides: set n_train_tumor and n_test_tumor >= 1")


@dataclass(frozen=True)
class SlideRecord:
    """One slide of the dataset.

    Attributes
    ----------
    name : str
        File stem, e.g. ``"tumor_001"``, ``"test_003"``.
    split : {"training", "testing"}
    kind : {"tumor", "normal"}
    path : Path
        The ``.tif``.
    annotation : Path or None
        ASAP XML of a tumour slide.
    seed : int
        The slide's own seed (layout and block orientations).
    layout : Layout
        Its tissue islands and lesions, level-0 px.
    written : bool
        False when this run found the slide already complete and skipped it.
    """

    name: str
    split: str
    kind: str
    path: Path
    annotation: Path | None
    seed: int
    layout: Layout
    written: bool


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`make_dataset` produced."""

    out_dir: Path
    params: SynthParams
    slides: tuple[SlideRecord, ...]
    reference: Path
    manifest: Path
    pcam: dict[str, tuple[Path, Path]]
    seconds: float

    @property
    def n_written(self) -> int:
        """Slides written by this run (the others were complete already)."""
        return sum(s.written for s in self.slides)


def _slide_seed(seed: int, group: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, group, index]).generate_state(1)[0])


def _plan(params: SynthParams, out: Path) -> list[tuple[str, str, str, Path, Path | None, int]]:
    """(name, split, kind, tif, xml, seed) of every slide, in writing order."""
    plan: list[tuple[str, str, str, Path, Path | None, int]] = []
    for i in range(params.n_train_normal):
        name = f"normal_{i + 1:03d}"
        plan.append(
            (
                name,
                "training",
                "normal",
                out / "training" / "normal" / f"{name}.tif",
                None,
                _slide_seed(params.seed, 1, i),
            )
        )
    for i in range(params.n_train_tumor):
        name = f"tumor_{i + 1:03d}"
        train_xml = out / "training" / "lesion_annotations" / f"{name}.xml"
        plan.append(
            (
                name,
                "training",
                "tumor",
                out / "training" / "tumor" / f"{name}.tif",
                train_xml,
                _slide_seed(params.seed, 2, i),
            )
        )
    kinds = ["tumor"] * params.n_test_tumor + ["normal"] * params.n_test_normal
    order = np.random.default_rng([params.seed, 3]).permutation(len(kinds))
    for i, j in enumerate(order):
        kind = kinds[int(j)]
        name = f"test_{i + 1:03d}"
        xml = out / "testing" / "lesion_annotations" / f"{name}.xml" if kind == "tumor" else None
        plan.append(
            (name, "testing", kind, out / "testing" / "images" / f"{name}.tif", xml, _slide_seed(params.seed, 4, i))
        )
    return plan


def _check_existing(manifest: Path, params: SynthParams) -> None:
    if not manifest.is_file():
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{manifest}: unreadable ({err}); delete it to regenerate the dataset") from err
    if old.get("params_hash") != config_hash(params):
        raise DatasetError(
            f"{manifest}: this folder holds a synthetic dataset made with other parameters "
            f"({old.get('params')}); use another output folder or delete this one"
        )


def _lesion_json(info_lesions: Layout, mpp: float) -> list[dict[str, Any]]:
    out = []
    for les in info_lesions.lesions:
        rect = les.polygon.minimum_rotated_rectangle
        xs, ys = rect.exterior.coords.xy
        extent = max(math.hypot(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) for i in range(2)) * mpp
        out.append(
            {
                "role": les.role,
                "bounds_level0": [round(v, 1) for v in les.polygon.bounds],
                "area_um2": round(les.polygon.area * mpp * mpp, 1),
                "extent_um": round(extent, 1),
            }
        )
    return out


def _write_manifest(
    path: Path, params: SynthParams, slides: list[SlideRecord], pcam: dict[str, Any], complete: bool
) -> None:
    out = path.parent
    doc = {
        "format": _FORMAT,
        "version": _VERSION,
        "params": to_dict(params),
        "params_hash": config_hash(params),
        "mpp": params.mpp,
        "slides": [
            {
                "name": s.name,
                "split": s.split,
                "kind": s.kind,
                "path": str(s.path.relative_to(out)),
                "annotation": None if s.annotation is None else str(s.annotation.relative_to(out)),
                "seed": s.seed,
                "size": list(params.size),
                "lesions": _lesion_json(s.layout, params.mpp),
            }
            for s in slides
        ],
        "reference": "testing/reference.csv",
        "pcam": pcam,
        "complete": complete,
    }
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def make_dataset(out_dir: PathLike, params: SynthParams, *, workers: int = 2) -> DatasetInfo:
    """Write (or finish) a synthetic CAMELYON16-like dataset; see the module docstring for the layout.

    Parameters
    ----------
    out_dir : path-like
        Dataset root (created).
    params : SynthParams
        What to make. A rerun with the same parameters skips complete slides.
    workers : int
        Threads encoding tiles (does not change the output).

    Returns
    -------
    DatasetInfo

    Raises
    ------
    DatasetError
        ``out_dir`` holds a dataset made with different parameters.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "dataset.json"
    _check_existing(manifest, params)
    plan = _plan(params, out)
    # record the parameters first so an interrupted run is recognised (and resumed) later
    if not manifest.is_file():
        _write_manifest(manifest, params, [], {}, complete=False)
    records: list[SlideRecord] = []
    for name, split, kind, tif, xml, seed in progress(plan, total=len(plan), desc="synth slides", unit="slide"):
        common: dict[str, Any] = {
            "kind": kind,
            "seed": seed,
            "mpp": params.mpp,
            "tissue_fraction": params.tissue_fraction,
        }
        if tif.is_file():
            layout = slide_layout(size=params.size, **common)
            written = False
            logger.info("%s: complete, skipped", tif)
        else:
            info: SlideInfo = make_slide(
                tif,
                size=params.size,
                quality=params.quality,
                texture_seed=params.seed,
                canvas_px=params.canvas_px,
                workers=workers,
                progress=True,
                **common,
            )
            layout = Layout(info.islands, info.lesions)
            written = True
        if xml is not None and (written or not xml.is_file()):
            xml.parent.mkdir(parents=True, exist_ok=True)
            tmp_xml = xml.with_name(xml.name + ".partial.xml")
            write_asap_xml(
                [
                    Annotation(les.polygon, TUMOR, f"Annotation {k}", {"group": "_0"})
                    for k, les in enumerate(layout.lesions)
                ],
                tmp_xml,
            )
            os.replace(tmp_xml, xml)
        records.append(SlideRecord(name, split, kind, tif, xml, seed, layout, written))
    reference = _write_reference(out, params, records)
    pcam_files: dict[str, tuple[Path, Path]] = {}
    if params.pcam > 0:
        pcam_files = _write_pcam(out / "pcam", params, records)
    pcam_doc = {split: [str(p.relative_to(out)) for p in paths] for split, paths in pcam_files.items()}
    _write_manifest(manifest, params, records, pcam_doc, complete=True)
    info_out = DatasetInfo(out, params, tuple(records), reference, manifest, pcam_files, time.perf_counter() - start)
    logger.info("%s: %d slides (%d written) in %.1f s", out, len(records), info_out.n_written, info_out.seconds)
    return info_out


def _write_reference(out: Path, params: SynthParams, records: list[SlideRecord]) -> Path:
    """``testing/reference.csv``: ``Test_001,Tumor,Micro`` (or ``Macro``) / ``Test_002,Normal``."""
    from wsipipe.tables import write_reference

    labels: dict[str, bool] = {}
    details: dict[str, str] = {}
    for rec in records:
        if rec.split != "testing":
            continue
        case = rec.name[:1].upper() + rec.name[1:]
        labels[case] = rec.kind == "tumor"
        if rec.kind == "tumor":
            largest = max(
                (_lesion_json(Layout((), (les,)), params.mpp)[0]["extent_um"] for les in rec.layout.lesions),
                default=0.0,
            )
            details[case] = "Macro" if largest > _MACRO_UM else "Micro"
    return write_reference(out / "testing" / "reference.csv", labels, details=details)


def _write_pcam(pcam_dir: Path, params: SynthParams, records: list[SlideRecord]) -> dict[str, tuple[Path, Path]]:
    """PCam files: train/valid from the training slides (apart when there are enough), test from testing."""
    if all(p.is_file() for split in ("train", "valid", "test") for p in pcam_paths(pcam_dir, split)):
        logger.info("%s: PCam files complete, skipped", pcam_dir)
        return {split: pcam_paths(pcam_dir, split) for split in ("train", "valid", "test")}

    def source(rec: SlideRecord) -> PatchSource:
        return PatchSource(
            rec.path, rec.layout.islands, tuple(les.polygon for les in rec.layout.lesions), rec.name, params.size
        )

    train = [r for r in records if r.split == "training"]
    test = [source(r) for r in records if r.split == "testing"]
    tumours = [r for r in train if r.kind == "tumor"]
    normals = [r for r in train if r.kind == "normal"]
    if len(tumours) >= 2:
        valid_recs = [tumours[-1], *normals[-1:]] if len(normals) >= 2 else [tumours[-1]]
        train_recs = [r for r in train if r not in valid_recs]
    else:
        logger.warning("PCam: only one training tumour slide; train and valid splits share slides")
        train_recs = valid_recs = train
    n_small = max(2, params.pcam // 4)
    return write_pcam(
        pcam_dir,
        {"train": [source(r) for r in train_recs], "valid": [source(r) for r in valid_recs], "test": test},
        n_per_split={"train": params.pcam, "valid": n_small, "test": n_small},
        seed=params.seed,
    )
