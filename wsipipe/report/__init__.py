"""The run report: one self-contained HTML page per run, and its figures as images for papers.

>>> from wsipipe.report import write_report
>>> write_report("demo-out")  # doctest: +SKIP
PosixPath('demo-out/report/index.html')

See ``docs/report.md``.
"""

from __future__ import annotations

from wsipipe.report._collect import RunData, SlideView, collect_run
from wsipipe.report.stage import ReportParams, write_report

__all__ = ["ReportParams", "RunData", "SlideView", "collect_run", "write_report"]
