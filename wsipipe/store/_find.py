"""Expand user inputs (stores, folders of stores, run folders) into patch-store paths."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from wsipipe.errors import StoreError
from wsipipe.storage import as_url, listing_failure, redact_url
from wsipipe.types import PathLike

__all__ = ["find_stores"]


def find_stores(paths: Iterable[PathLike]) -> list[Path]:
    """Expand store paths and directories into ``.zarr`` store directories, in input order.

    A ``*.zarr`` directory (or any directory with a ``zarr.json``) is a store; another directory
    contributes its ``*.zarr`` children, or those of its ``stores/`` sub-directory (a run's
    output directory), sorted by name. A store named twice is returned once. An fsspec URL
    (``s3://bucket/run/``) is listed the same way; its stores are ``Path`` objects made from
    their URLs (:func:`wsipipe.storage.as_url` gives the URL back).

    Raises
    ------
    StoreError
        If a path does not exist or a directory holds no stores.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        url = as_url(path)
        if url is not None:
            found.extend(_find_url_stores(url))
            continue
        if not path.exists():
            raise StoreError(
                f"{path}: no such store or directory; give a .zarr store, a folder of stores or a run folder"
            )
        if path.suffix == ".zarr" or (path / "zarr.json").is_file():
            found.append(path)
            continue
        children = sorted(p for p in path.glob("*.zarr") if p.is_dir())
        if not children and (path / "stores").is_dir():
            children = sorted(p for p in (path / "stores").glob("*.zarr") if p.is_dir())
        if not children:
            raise StoreError(
                f"{path} holds no patch stores (*.zarr) in it or in its stores/ folder; run `wsipipe tile` first"
            )
        found.extend(children)
    return list(dict.fromkeys(found))


def _find_url_stores(url: str) -> list[Path]:
    """The stores at or under an fsspec URL prefix (the same rules as for a local directory).

    One listing of the prefix (and one of its ``stores/`` where there is one): it tells a store
    (a ``zarr.json`` right under it), a prefix of stores and a run prefix apart.
    """
    from wsipipe.storage import url_reader

    fs, key = url_reader(url)
    fs.invalidate_cache(key)

    def names(prefix: str) -> list[str]:
        try:
            return sorted(str(p).rstrip("/") for p in fs.ls(prefix, detail=False))
        except FileNotFoundError:
            return []

    try:
        children = names(key)
        if f"{key}/zarr.json" in children:
            return [Path(url)]
        if not key.endswith(".zarr"):
            for prefix in (key, f"{key}/stores"):
                if prefix != key and prefix not in children:
                    break
                stores = [c for c in (children if prefix == key else names(prefix)) if c.endswith(".zarr")]
                if stores:
                    return [Path(fs.unstrip_protocol(c)) for c in stores]
    except Exception as err:  # any error of the file system library (botocore's EndpointConnectionError is no OSError)
        raise StoreError(listing_failure(err, url)) from err
    raise StoreError(f"{redact_url(url)}: no patch store there; give a .zarr store, a prefix of stores or a run prefix")
