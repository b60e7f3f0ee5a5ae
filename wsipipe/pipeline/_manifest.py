"""The run manifest ``<out>/manifest.json``: what ran, with which config and versions, and how it went.

It is rewritten atomically (temp file + rename) whenever a stage starts or finishes, and at
most every :data:`FLUSH_INTERVAL_S` seconds while items are recorded, so a killed run leaves
a truthful manifest (its run and stage show ``"running"``; the next run marks them
``"interrupted"``). The same record goes to ``<out>/runs/<run_id>.json``, and ``history``
lists the earlier runs. Stages not run this time keep the record of the run that last ran them.
In a run directory at an fsspec URL each write is one PUT of the whole object, which readers
see whole or not at all, as they do a renamed file.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsipipe import __version__
from wsipipe.config import config_hash, to_dict
from wsipipe.errors import OutputError
from wsipipe.pipeline._context import ItemStatus, StageResult
from wsipipe.storage import as_url, location, open_output, read_bytes

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "RunManifest", "package_versions", "utc_now", "write_json_atomic"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
FLUSH_INTERVAL_S = 1.0
_HISTORY_MAX = 200

#: Distributions whose versions every manifest records (absent ones as null).
KEY_PACKAGES: tuple[str, ...] = (
    "numpy",
    "scipy",
    "scikit-image",
    "torch",
    "zarr",
    "dask",
    "distributed",
    "openslide-python",
    "openslide-bin",
    "tiffslide",
    "tifffile",
    "imagecodecs",
    "shapely",
    "h5py",
    "safetensors",
    "pillow",
    "pyyaml",
    "captum",
)


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`KEY_PACKAGES` (from metadata; nothing is imported)."""
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename (at a URL: one PUT).

    Raises
    ------
    OutputError
        If the file cannot be written (read-only directory, full disk, an unreachable store).
    """
    if as_url(path) is not None:
        text = json.dumps(data, indent=2, default=str) + "\n"
        try:
            with open_output(path) as fh:
                fh.write(text.encode("utf-8"))
        except OSError as err:
            raise OutputError(f"cannot write {location(path)}: {err}") from err
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err}") from err


class RunManifest:
    """The manifest of one run, kept in memory and written to ``<out>/manifest.json``.

    Parameters
    ----------
    out_dir : Path
        The run's output directory (it must exist; the run lock is held).
    run_id : str
        This run's id.
    pipeline : mapping
        The resolved configuration (``PipelineSpec.to_dict()``).
    options : mapping
        The run options (only, force, scheduler, overrides).
    """

    def __init__(self, out_dir: Path, run_id: str, pipeline: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.run_path = out_dir / "runs" / f"{run_id}.json"
        previous = self._load_previous()
        history = list(previous.get("history", []))
        stages: dict[str, Any] = dict(previous.get("stages", {}))
        prev_run = previous.get("run")
        if isinstance(prev_run, dict):
            if prev_run.get("status") == "running":  # killed: we hold the lock, so it is not running
                prev_run["status"] = "interrupted"
            for record in stages.values():
                if isinstance(record, dict) and record.get("status") == "running":
                    record["status"] = "interrupted"
            history.append({k: prev_run.get(k) for k in ("run_id", "status", "started", "finished", "seconds")})
        self.data: dict[str, Any] = {
            "wsipipe_manifest_version": MANIFEST_VERSION,
            "run": {
                "run_id": run_id,
                "status": "running",
                "started": utc_now(),
                "finished": None,
                "seconds": None,
                "error": None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "options": dict(options),
                "wsipipe": __version__,
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "packages": package_versions(),
                "config": dict(pipeline),
            },
            "stages": stages,
            "history": history[-_HISTORY_MAX:],
        }
        self._t0 = time.perf_counter()
        self._mutex = threading.RLock()  # stages may record items from several threads
        self._last_write = 0.0

    def _load_previous(self) -> dict[str, Any]:
        try:
            text = read_bytes(self.path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise OutputError(f"cannot read the run manifest {location(self.path)}: {err}") from err
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            aside = self.path.with_name(f"{MANIFEST_NAME}.unreadable-{int(time.time())}")
            logger.warning(
                "run manifest %s is unreadable (%s); moved it to %s", location(self.path), err, location(aside)
            )
            if as_url(self.path) is None:
                os.replace(self.path, aside)
            else:  # no rename: keep a copy (the manifest itself is overwritten by the next write)
                with open_output(aside) as fh:
                    fh.write(text.encode("utf-8"))
            return {}
        return data

    @property
    def run_id(self) -> str:
        return str(self.data["run"]["run_id"])

    def write(self) -> None:
        """Write the manifest now (``manifest.json`` and ``runs/<run_id>.json``)."""
        with self._mutex:
            try:
                if as_url(self.run_path) is None:
                    self.run_path.parent.mkdir(exist_ok=True)
            except OSError as err:
                raise OutputError(f"cannot create {self.run_path.parent}: {err}") from err
            write_json_atomic(self.path, self.data)
            write_json_atomic(self.run_path, self.data)
            self._last_write = time.monotonic()

    def stage_started(self, name: str, params: Any) -> None:
        """Record that stage ``name`` starts with ``params``, and write."""
        self.data["stages"][name] = {
            "run_id": self.run_id,
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "seconds": None,
            "config_hash": config_hash(params),
            "params": to_dict(params),
            "counts": {"done": 0, "skipped": 0, "failed": 0},
            "items": {},
            "summary": {},
            "error": None,
        }
        self.write()

    def record_item(self, stage: str, item: str, status: ItemStatus) -> None:
        """Record an item's outcome; written at most every :data:`FLUSH_INTERVAL_S` seconds."""
        with self._mutex:
            record = self.data["stages"][stage]
            record["items"][item] = _item_dict(status)
            record["counts"] = _counts(record["items"])
            if time.monotonic() - self._last_write >= FLUSH_INTERVAL_S:
                self.write()

    def stage_finished(
        self, name: str, status: str, seconds: float, result: StageResult | None = None, error: str | None = None
    ) -> None:
        """Record the end of stage ``name`` (``done``, ``partial``, ``failed``, ``interrupted``), and write."""
        record = self.data["stages"][name]
        if result is not None:
            record["items"].update({k: _item_dict(v) for k, v in result.items.items()})
            record["summary"] = to_dict(dict(result.summary))
        record.update(
            status=status, finished=utc_now(), seconds=round(seconds, 3), error=error, counts=_counts(record["items"])
        )
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the end of the run (``done``, ``partial``, ``failed``, ``interrupted``), and write."""
        run = self.data["run"]
        run.update(status=status, finished=utc_now(), seconds=round(time.perf_counter() - self._t0, 3), error=error)
        self.write()


def _item_dict(status: ItemStatus) -> dict[str, Any]:
    seconds = None if status.seconds is None else round(status.seconds, 3)
    return {"status": status.status, "message": status.message, "seconds": seconds}


def _counts(items: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for entry in items.values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    return counts
