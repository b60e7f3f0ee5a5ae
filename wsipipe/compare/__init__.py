"""Comparison tables of trained models: the CELNet paper's Table 1 (PCam) and Table 3 (HPLOC).

:func:`compare_models` trains each model variant of a list of rows and evaluates it, either on a
PCam split (accuracy, AUC, #params; :func:`wsipipe.evaluation.evaluate_patches`) or on an
HPLOC-style patch set with an explanation method (precision, recall; :func:`wsipipe.explain.hploc_counts`),
then writes the table in the paper's layout (:func:`format_table`). The ``compare`` pipeline
stage runs it (``pipelines/pcam-table1.yaml``, ``pipelines/hploc-table3.yaml``); see
``docs/pipelines.md``. Importing this package imports torch (through :mod:`wsipipe.training`).
"""

from __future__ import annotations

from wsipipe.compare._format import TABLE_COLUMNS, format_params, format_table, table_csv
from wsipipe.compare._hploc import read_hploc_set, write_hploc_set
from wsipipe.compare.stage import CompareParams, CompareResult, CompareRow, HplocSetParams, compare_models

__all__ = [
    "TABLE_COLUMNS",
    "CompareParams",
    "CompareResult",
    "CompareRow",
    "HplocSetParams",
    "compare_models",
    "format_params",
    "format_table",
    "read_hploc_set",
    "table_csv",
    "write_hploc_set",
]
