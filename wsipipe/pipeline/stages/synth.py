"""synth: make a synthetic CAMELYON16-like dataset (slides, ASAP XML, reference.csv, PCam HDF5).

The options are those of :class:`wsipipe.synth.SynthParams` plus ``dir`` and ``workers``.
A finished dataset with the same options is reused (its slides are recorded ``skipped``);
``--force`` deletes it and makes it again. A dataset made with other options is refused
unless ``--force`` is given, so changed options never mix two datasets in one folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from wsipipe.errors import DatasetError, OutputError
from wsipipe.pipeline._context import StageContext, StageResult
from wsipipe.synth import SynthParams

__all__ = ["Params", "run"]

_DATASET_FILE = "dataset.json"
_FORMAT = "wsipipe-synth-camelyon16"


@dataclass(frozen=True, kw_only=True)
class Params(SynthParams):
    """Options of the ``synth`` stage: :class:`~wsipipe.synth.SynthParams` and where to write.

    Attributes
    ----------
    dir : Path or None
        Dataset root; None means ``<out>/data``. Relative paths resolve against the file
        that sets them; ``${out}`` is the output directory.
    workers : int
        Threads encoding tiles (does not change the output).
    """

    dir: Path | None = None
    workers: int = 2


def synth_params(params: Params) -> SynthParams:
    """The :class:`SynthParams` part of the stage's ``params``."""
    return SynthParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(SynthParams) if f.init})


def _existing(folder: Path) -> dict[str, object] | None:
    path = folder / _DATASET_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == _FORMAT else None


def run(params: Params, ctx: StageContext) -> StageResult:
    """Make (or finish, or reuse) the dataset; one item per slide."""
    from wsipipe.config import config_hash
    from wsipipe.synth import make_dataset

    folder = params.dir if params.dir is not None else ctx.out_dir / "data"
    wanted = synth_params(params)
    old = _existing(folder)
    if old is not None and old.get("params_hash") != config_hash(wanted):
        if not ctx.force:
            raise DatasetError(
                f"{folder / _DATASET_FILE}: this folder holds a synthetic dataset made with other options "
                f"({old.get('params')}); rerun with --force to replace it, or set stages.synth.dir to another folder"
            )
        ctx.logger.warning("synth: replacing the dataset in %s (made with other options)", folder)
        shutil.rmtree(folder)
    elif old is not None and ctx.force:
        ctx.logger.info("synth: --force: making the dataset in %s again", folder)
        shutil.rmtree(folder)
    try:
        info = make_dataset(folder, wanted, workers=params.workers)
    except OSError as err:
        raise OutputError(f"cannot write the synthetic dataset in {folder}: {err}") from err
    for slide in info.slides:
        if slide.written:
            ctx.record(slide.name, "done")
        else:
            ctx.record(slide.name, "skipped", "complete already")
    return StageResult(
        summary={
            "dir": str(info.out_dir),
            "n_slides": len(info.slides),
            "n_written": info.n_written,
            "reference": str(info.reference),
            "pcam": {split: [str(p) for p in paths] for split, paths in info.pcam.items()},
            "seconds": round(info.seconds, 3),
        }
    )
