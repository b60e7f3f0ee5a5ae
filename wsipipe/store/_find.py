"""Expand user inputs (stores, folders of stores, run folders) into patch-store paths."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from wsipipe.errors import StoreError
from wsipipe.types import PathLike

__all__ = ["find_stores"]


def find_stores(paths: Iterable[PathLike]) -> list[Path]:
    """Expand store paths and directories into ``.zarr`` store directories, in input order.

    A ``*.zarr`` directory (or any directory with a ``zarr.json``) is a store; another directory
    contributes its ``*.zarr`` children, or those of its ``stores/`` sub-directory (a run's
    output directory), sorted by name. A store named twice is returned once.

    Raises
    ------
    StoreError
        If a path does not exist or a directory holds no stores.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
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
