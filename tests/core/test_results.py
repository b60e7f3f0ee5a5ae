"""The shared failures contract of the batch stages' Result classes."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import wsipipe.results
from wsipipe.aggregate import AggregateResult
from wsipipe.errors import PartialFailureError
from wsipipe.explain import ExplainResult
from wsipipe.export import ExportResult
from wsipipe.inference import InferResult
from wsipipe.results import BatchResult
from wsipipe.tiling import TileResult


def test_module_example() -> None:
    assert doctest.testmod(wsipipe.results).failed == 0


@pytest.mark.parametrize("cls", [TileResult, InferResult, AggregateResult, ExportResult, ExplainResult])
def test_every_batch_stage_result_shares_the_contract(cls: type[BatchResult]) -> None:
    assert issubclass(cls, BatchResult)
    assert cls._ITEMS in cls.__dataclass_fields__  # type: ignore[attr-defined]


def test_failures_name_failed_items_and_raise_partial_failure() -> None:
    from wsipipe.tiling import SlideSummary

    def summary(name: str, status: str, error: str | None = None) -> SlideSummary:
        return SlideSummary(
            slide_id=name, path=Path(f"/s/{name}.tif"), store=Path(f"/o/{name}.zarr"), status=status, error=error
        )

    ok = TileResult(out_dir=Path("/o"), slides=(summary("a", "done"), summary("b", "skipped")))
    assert ok.ok
    assert ok.failures == {}
    ok.raise_for_failures()
    bad = TileResult(out_dir=Path("/o"), slides=(summary("a", "done"), summary("b", "failed", "SlideError: torn")))
    assert not bad.ok
    assert bad.failures == {"/s/b.tif": "SlideError: torn"}
    with pytest.raises(PartialFailureError, match=r"1 of 2 slides failed to tile: /s/b.tif") as info:
        bad.raise_for_failures()
    assert info.value.failures == {"/s/b.tif": "SlideError: torn"}
