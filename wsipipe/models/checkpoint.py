"""Model checkpoints: safetensors weights + JSON metadata, never a pickle.

Layout: a checkpoint is a *directory*::

    <ckpt>/weights.safetensors   state_dict tensors (the metadata JSON is also in its header)
    <ckpt>/meta.json             CheckpointMeta as JSON, incl. the weights file's SHA-256

:func:`load_checkpoint` also accepts a lone ``.safetensors`` file written by
:func:`save_checkpoint` (it reads the metadata from the header). It rebuilds the architecture
from the registry (:func:`wsipipe.models.build_model`) and checks, in this order: that the path
is a safetensors checkpoint (a pickle, a torch ``.pt`` zip, anything else is refused *without*
being unpickled), the metadata keys and format version, the architecture name, the SHA-256 of
the weights, and that every tensor name and shape fits the rebuilt model.

A checkpoint (directory or file) may be at an fsspec URL (``s3://bucket/models/best``): its
weights and metadata are downloaded through :mod:`wsipipe.storage` into a temporary folder and
checked there exactly as a local one (nothing else under the prefix is fetched).

:func:`read_checkpoint_meta` makes the checks that need no model (the safetensors framing, the
metadata, the SHA-256) and returns the metadata without building the model: this module imports torch only inside
the functions that build or save a model, so a client that plans work (``wsipipe infer``) reads
a checkpoint without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from wsipipe import __version__
from wsipipe.errors import CheckpointError, ConfigError, output_error
from wsipipe.storage import as_url, is_dir, location, output_exists, url_fs
from wsipipe.types import PathLike

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "write_safetensors",
]

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = 1
WEIGHTS_NAME = "weights.safetensors"
META_NAME = "meta.json"
_HEADER_KEY = "wsipipe_meta"


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What a checkpoint says about its model.

    Attributes
    ----------
    architecture : str
        Registry name (:func:`wsipipe.models.list_models`).
    arch_kwargs : dict
        Builder arguments (JSON values).
    class_names : tuple of str
        Output classes, in logit order; one name for a sigmoid score (e.g. ``("tumor",)``).
    input_mpp : float or None
        Resolution of the training tiles, µm/px.
    tile_size : int
        Tile side the model was trained on, px.
    norm_mean, norm_std : tuple of 3 float
        Per-channel normalisation of RGB values scaled to [0, 1]: ``(x/255 - mean) / std``.
    provenance : dict
        Training record: dataset, epochs, seed, metrics, config hash … (JSON values).
    wsipipe_version : str
        Version that wrote the checkpoint.
    created : str
        UTC timestamp, ISO 8601.
    weights_sha256 : str
        SHA-256 of ``weights.safetensors``; filled by :func:`save_checkpoint`.
    format : int
        :data:`CHECKPOINT_FORMAT`.
    """

    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ("tumor",)
    input_mpp: float | None = None
    tile_size: int = 96
    norm_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    norm_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    provenance: dict[str, Any] = field(default_factory=dict)
    wsipipe_version: str = __version__
    created: str = ""
    weights_sha256: str = ""
    format: int = CHECKPOINT_FORMAT

    def to_json(self) -> str:
        """Return the metadata as a JSON document."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "") -> CheckpointMeta:
        """Parse :meth:`to_json` output, with ``CheckpointError`` naming ``source`` on problems."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{source}: metadata is not valid JSON ({err})") from err
        if not isinstance(raw, dict):
            raise CheckpointError(f"{source}: metadata must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {"architecture", "class_names", "tile_size", "weights_sha256", "format"}
        missing = sorted(required - raw.keys())
        if missing:
            raise CheckpointError(f"{source}: metadata lacks required keys {missing}; re-save the checkpoint")
        unknown = sorted(raw.keys() - names)
        if unknown:
            raise CheckpointError(f"{source}: metadata has unknown keys {unknown} (written by a newer wsipipe?)")
        if raw["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{source}: checkpoint format {raw['format']!r} is not supported (this wsipipe reads {CHECKPOINT_FORMAT})"
            )
        from wsipipe.config import parse_config

        try:
            return parse_config(cls, raw, source=source)
        except ConfigError as err:
            raise CheckpointError(f"invalid checkpoint metadata: {err}") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with a full or read-only disk raised as an OutputError naming ``path``.

    safetensors reports I/O failures as its own ``SafetensorError`` ("... (os error 28)"), not
    as ``OSError``; a partly written ``path`` is removed.

    Raises
    ------
    OutputError
        If the file cannot be written for lack of space, a file-size limit or a read-only disk.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except (SafetensorError, OSError) as err:
        path.unlink(missing_ok=True)
        code = re.search(r"os error (\d+)", str(err))
        errno = int(code.group(1)) if code else None
        cause = err if isinstance(err, OSError) else OSError(errno, os.strerror(errno)) if errno else None
        full = output_error(cause, path) if cause is not None else None
        if full is not None:
            raise full from err
        raise


def save_checkpoint(model: nn.Module, path: PathLike, meta: CheckpointMeta) -> Path:
    """Write ``model``'s weights and ``meta`` as the checkpoint directory ``path``.

    Parameters
    ----------
    model : nn.Module
        Its ``state_dict`` is saved (tensors made contiguous, on CPU).
    path : path-like
        Checkpoint directory (created; existing files in it are replaced atomically).
    meta : CheckpointMeta
        Metadata; ``weights_sha256`` and (if empty) ``created`` are filled in.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if not meta.created:
        meta = dataclasses.replace(meta, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header_meta = dataclasses.replace(meta, weights_sha256="")
    tmp = out / (WEIGHTS_NAME + ".tmp")
    write_safetensors(tensors, tmp, metadata={_HEADER_KEY: header_meta.to_json()})
    meta = dataclasses.replace(meta, weights_sha256=_sha256(tmp))
    os.replace(tmp, out / WEIGHTS_NAME)
    tmp_meta = out / (META_NAME + ".tmp")
    tmp_meta.write_text(meta.to_json())
    os.replace(tmp_meta, out / META_NAME)
    return out


def _refuse_non_safetensors(path: Path) -> None:
    """Check the safetensors framing (u64 header length, then a JSON object) before any parsing."""
    with path.open("rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return
    if head[:2] == b"PK":
        what = "a zip archive (a torch.save checkpoint)"
    elif head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        what = "a Python pickle"
    else:
        what = "not a safetensors file"
    raise CheckpointError(
        f"{path}: is {what}; wsipipe only loads safetensors checkpoints and never unpickles files. "
        "Convert it with torch.load(weights_only=True) + wsipipe.models.save_checkpoint in a trusted session."
    )


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _refuse_non_safetensors(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def load_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu", *, require: Iterable[str] = (), hint: str = ""
) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles.

    Parameters
    ----------
    path : path-like
        The checkpoint directory, or its ``weights.safetensors`` / a lone ``.safetensors`` file;
        a local path or an fsspec URL.
    map_location : str or torch.device
        Device for the model.
    require : iterable of str, optional
        Capabilities the caller will use (names in :data:`wsipipe.models.CAPABILITIES`:
        ``"dense"``, ``"cam"``, ``"patch_map"``), checked as soon as the model is built.
    hint : str, optional
        What the user can do instead, added to a missing capability's message.

    Returns
    -------
    (model, meta)
        The rebuilt model in eval mode and its :class:`CheckpointMeta`.

    Raises
    ------
    CheckpointError
        Missing files, a pickle or other non-safetensors file, bad or incomplete metadata, an
        unknown architecture, a SHA-256 mismatch, or tensors that do not fit the architecture.
    ConfigError
        The model lacks a capability in ``require`` (the message names the models that have it).
    """
    from wsipipe.models.capabilities import require_capability
    from wsipipe.models.registry import build_model

    url = as_url(path)
    if url is not None:
        with _local_copy(url) as local:
            return _naming(url, local, lambda: load_checkpoint(local, map_location, require=require, hint=hint))
    p = Path(path)
    weights, meta_path = _checkpoint_files(p)
    tensors, header = _read_weights(weights)
    meta = _checked_meta(weights, meta_path, header)
    try:
        model = build_model(meta.architecture, **meta.arch_kwargs)
    except ConfigError as err:
        raise CheckpointError(f"{weights}: cannot rebuild the model: {err}") from err
    for capability in require:
        try:
            require_capability(model, capability, hint=hint)
        except ConfigError as err:
            raise ConfigError(f"checkpoint {p}: {err}") from None
    expected = model.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: tensors do not fit architecture {meta.architecture!r} {meta.arch_kwargs}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    for name in expected:
        tensor = tensors[name]
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{weights}: tensor {name!r} has shape {tuple(tensor.shape)}, architecture "
                f"{meta.architecture!r} {meta.arch_kwargs} expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors)
    model.to(map_location)
    model.eval()
    return model, meta


def _checkpoint_files(p: Path) -> tuple[Path, Path | None]:
    """The weights file and the ``meta.json`` beside it (None: the metadata is in the header) of local path ``p``."""
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not weights.is_file():
            found = ", ".join(sorted(x.name for x in p.iterdir())) or "nothing"
            raise CheckpointError(f"{p}: no {WEIGHTS_NAME} in the checkpoint directory (found: {found})")
        return weights, p / META_NAME
    sibling = p.parent / META_NAME
    return p, sibling if p.name == WEIGHTS_NAME and sibling.is_file() else None


def _checked_meta(weights: Path, meta_path: Path | None, header: dict[str, str]) -> CheckpointMeta:
    """The metadata of ``meta_path`` (its SHA-256 checked against ``weights``) or of the weights' ``header``."""
    if meta_path is not None and meta_path.is_file():
        meta = CheckpointMeta.from_json(meta_path.read_text(), source=str(meta_path))
        digest = _sha256(weights)
        if digest != meta.weights_sha256:
            raise CheckpointError(
                f"{weights}: SHA-256 {digest[:12]}… does not match {meta.weights_sha256[:12]}… recorded in "
                f"{meta_path}; the weights were modified or belong to another checkpoint"
            )
        return meta
    if _HEADER_KEY in header:
        return CheckpointMeta.from_json(header[_HEADER_KEY], source=f"{weights} (header)")
    raise CheckpointError(f"{weights}: no wsipipe metadata ({META_NAME} missing and none in the file header)")


def _read_header(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header, read without torch or safetensors."""
    _refuse_non_safetensors(path)
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    found = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not isinstance(found or {}, dict):
        raise CheckpointError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    return {str(k): str(v) for k, v in (found or {}).items()}


def read_checkpoint_meta(path: PathLike) -> CheckpointMeta:
    """The metadata of a checkpoint written by :func:`save_checkpoint`, checked; without importing torch.

    Makes the checks of :func:`load_checkpoint` that need no model: a safetensors file (a pickle
    or a torch ``.pt`` zip is refused without being unpickled), the metadata's keys and format
    version, and the SHA-256 of the weights against ``meta.json``. The architecture and the
    tensors are checked when the model is loaded (:func:`load_checkpoint`, on the workers).

    Parameters
    ----------
    path : path-like
        The checkpoint directory, or its ``weights.safetensors`` / a lone ``.safetensors`` file;
        a local path or an fsspec URL (its two files are downloaded to a temporary folder).

    Returns
    -------
    CheckpointMeta

    Raises
    ------
    CheckpointError
        Missing files, a pickle or other non-safetensors file, bad or incomplete metadata, or a
        SHA-256 mismatch.
    """
    url = as_url(path)
    if url is not None:
        with _local_copy(url) as local:
            return _naming(url, local, lambda: read_checkpoint_meta(local))
    weights, meta_path = _checkpoint_files(Path(path))
    return _checked_meta(weights, meta_path, _read_header(weights))


_T = TypeVar("_T")


def _naming(url: str, local: Path, read: Callable[[], _T]) -> _T:
    """``read()``, with errors naming ``url`` instead of its temporary copy ``local``."""
    try:
        return read()
    except (CheckpointError, ConfigError) as err:
        raise type(err)(str(err).replace(str(local), location(url))) from None


@contextmanager
def _local_copy(url: str) -> Iterator[Path]:
    """A temporary local copy of the checkpoint at ``url``: its weights and ``meta.json`` only."""
    shown = location(url)
    with tempfile.TemporaryDirectory(prefix="wsipipe-ckpt-") as tmp:
        local = Path(tmp) / (Path(url).name or "checkpoint")
        try:
            fs, key = url_fs(url)
            if is_dir(url):
                local.mkdir()
                names = [n for n in (WEIGHTS_NAME, META_NAME) if output_exists(f"{url}/{n}")]
                if WEIGHTS_NAME not in names:
                    found = ", ".join(sorted(Path(k).name for k in fs.ls(key, detail=False))) or "nothing"
                    raise CheckpointError(f"{shown}: no {WEIGHTS_NAME} in the checkpoint directory (found: {found})")
                for name in names:
                    fs.get_file(f"{key}/{name}", str(local / name))
            elif output_exists(url):
                fs.get_file(key, str(local))
                sibling = url.rsplit("/", 1)[0] + "/" + META_NAME
                if local.name == WEIGHTS_NAME and output_exists(sibling):
                    fs.get_file(url_fs(sibling)[1], str(local.parent / META_NAME))
            else:
                raise CheckpointError(f"{shown}: checkpoint not found")
        except OSError as err:
            raise CheckpointError(f"{shown}: cannot read the checkpoint ({err})") from err
        yield local
