"""HTML of the run report: one self-contained page (inline CSS, images as data URIs, no scripts).

Every piece of text that comes from files (slide ids, messages, paths, JSON) goes through
:func:`~wsipipe.report._markup.esc` (:func:`html.escape`); the only markup is what these modules write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wsipipe.report._collect import RunData
from wsipipe.report._markup import esc, fmt, fmt_seconds, html_table, status_badge
from wsipipe.report._sections import (
    Images,
    evaluation_section,
    explain_section,
    export_section,
    slides_section,
    training_section,
)
from wsipipe.storage import output_exists

__all__ = ["Images", "render_page"]


_CSS = """
:root{--fg:#1d2433;--muted:#5b6478;--line:#dde2ea;--bg:#f5f7fa;--card:#fff;--accent:#2456a6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
header.top{background:#1f2a44;color:#fff;padding:22px 28px}
header.top h1{margin:0 0 6px;font-size:24px;font-weight:600}
header.top .sub{color:#c8d1e4;font-size:13px}
header.top dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:6px 22px;margin:14px 0 0}
header.top dt{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:#9fb0d0}
header.top dd{margin:0;font-size:13px;word-break:break-all}
nav{max-width:1180px;margin:0 auto;padding:10px 28px;font-size:13px}
nav a{margin-right:14px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:0 0 8px}
h4{font-size:13px;margin:14px 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
section.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:14px 0;
box-shadow:0 1px 2px rgba(20,30,50,.04)}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px;background:var(--card)}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even) td{background:#fafbfd}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
background:#7a8599}
.b-done{background:#2e8b57}.b-skipped{background:#7a8599}.b-failed{background:#c0392b}.b-partial{background:#d68910}
.b-running{background:#2471a3}.b-interrupted{background:#8e44ad}.b-tumor{background:#b03a2e}.b-normal{background:#1e8449}
.b-missing{background:#aab2c0}
.kpi{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 14px}
.kpi div{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:150px}
.kpi b{display:block;font-size:22px}
.kpi span{font-size:12px;color:var(--muted)}
.muted{color:var(--muted)}
.err{color:#a93226}
figure{margin:8px 0}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
figcaption{font-size:12px;color:var(--muted)}
.slide-head{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px}
.facts{display:flex;flex-wrap:wrap;gap:6px 20px;font-size:13px;margin:4px 0 8px}
.facts span b{font-weight:600}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
pre{background:#0f1626;color:#dfe6f3;padding:12px;border-radius:6px;overflow:auto;font-size:12px;max-height:640px}
ul.parts{columns:2;padding-left:18px}
footer{color:var(--muted);font-size:12px;margin-top:40px}
"""


def _header(run: RunData, title: str) -> str:
    r = run.run
    config: dict[str, Any] = r["config"] if isinstance(r.get("config"), dict) else {}
    status = r.get("status")
    note = " (report written while the run was in progress)" if status == "running" else ""
    facts = [
        ("pipeline", config.get("name")),
        ("run id", r.get("run_id")),
        ("started", r.get("started")),
        ("finished", r.get("finished")),
        ("duration", fmt_seconds(r.get("seconds")) if r.get("seconds") is not None else None),
        ("wsipipe", r.get("wsipipe")),
        ("python", r.get("python")),
        ("host", r.get("host")),
        ("output", str(run.out_dir)),
    ]
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts if v not in (None, ""))
    desc = config.get("description")
    sub = f'<div class="sub">{esc(desc)}</div>' if desc else ""
    badge = f" {status_badge(status)}{esc(note)}" if status else ' <span class="badge b-missing">no manifest</span>'
    return f'<header class="top"><h1>{esc(title)}{badge}</h1>{sub}<dl>{items}</dl></header>'


def _parts(run: RunData) -> str:
    out = run.out_dir
    parts = [
        ("run manifest", run.manifest is not None, "wsipipe run PIPELINE.yaml"),
        ("patch stores", any(s.store for s in run.slides), "stage tile / wsipipe tile"),
        ("tile predictions", any(s.model for s in run.slides), "stage infer / wsipipe infer"),
        ("lesion detections (NMS)", any(s.has_lesions_csv for s in run.slides), "stage aggregate"),
        ("slide scores", output_exists(out / "slide_predictions.csv"), "stage aggregate"),
        ("evaluation", run.evaluation is not None, "stage evaluate / wsipipe evaluate"),
        ("training", bool(run.training), "stage train / wsipipe train"),
        ("explanations", bool(run.explain_pngs or run.explain_metrics), "stage explain / wsipipe explain"),
        ("export (QuPath / ASAP)", bool(run.export_files), "stage export / wsipipe export"),
    ]
    present = [name for name, ok, _ in parts if ok]
    missing = [(name, how) for name, ok, how in parts if not ok]
    lines = [f"<li>{status_badge('done')} {esc(name)}</li>" for name in present]
    lines += [
        f'<li>{status_badge("missing")} {esc(name)} <span class="muted">— made by {esc(how)}</span></li>'
        for name, how in missing
    ]
    text = f"{len(present)} of {len(parts)} parts present" + (
        f"; missing: {', '.join(name for name, _ in missing)}." if missing else "."
    )
    return f'<h2 id="contents">Contents of this run</h2><p>{esc(text)}</p><ul class="parts">{"".join(lines)}</ul>'


def _summary_text(summary: Any) -> str:
    if not isinstance(summary, Mapping):
        return ""
    bits = []
    for k, v in summary.items():
        if isinstance(v, dict | list) or (isinstance(v, str) and ("/" in v or "\\" in v)):
            continue
        bits.append(f"{k}={fmt(v, 3)}")
    return ", ".join(bits)


def _timings(run: RunData) -> str:
    if not run.stages:
        return '<h2 id="timings">Stages and timings</h2><p class="muted">No manifest: stage timings unknown.</p>'
    rows = []
    total = 0.0
    for name, rec in run.stages.items():
        rec = rec if isinstance(rec, Mapping) else {}
        counts = rec.get("counts") or {}
        secs = rec.get("seconds")
        total += float(secs) if isinstance(secs, int | float) else 0.0
        error = rec.get("error")
        rows.append(
            [
                f"<b>{esc(name)}</b>",
                status_badge(rec.get("status")),
                esc(rec.get("started") or ""),
                esc(fmt_seconds(secs) if secs is not None else "running"),
                esc(counts.get("done", 0)),
                esc(counts.get("skipped", 0)),
                f'<span class="{"err" if counts.get("failed") else ""}">{esc(counts.get("failed", 0))}</span>',
                esc(_summary_text(rec.get("summary"))) + (f'<div class="err">{esc(error)}</div>' if error else ""),
            ]
        )
    table = html_table(
        ["stage", "status", "started (UTC)", "time", "done", "skipped", "failed", "summary"], rows, numeric=(3, 4, 5, 6)
    )
    history = (run.manifest or {}).get("history") or []
    hist = f'<p class="muted">Sum of stage times: {esc(fmt_seconds(total))}. Earlier runs in this folder: {len(history)}.</p>'
    return f'<h2 id="timings">Stages and timings</h2>{table}{hist}'


def render_page(run: RunData, images: Images, *, title: str, max_points: int, generated: str, version: str) -> str:
    """The whole HTML document of the report.

    Parameters
    ----------
    run : RunData
        What the run directory holds.
    images : mapping of str to str
        Data URIs keyed as in :data:`Images`.
    title : str
        Page title.
    max_points : int
        Detections listed (and numbered in the figures) per slide.
    generated : str
        ISO time the report was written (UTC).
    version : str
        wsipipe version writing the report.
    """
    nav_items = [("contents", "Contents"), ("timings", "Timings"), ("evaluation", "Evaluation"), ("slides", "Slides")]
    if run.training:
        nav_items.append(("training", "Training"))
    if run.explain_pngs or run.explain_metrics:
        nav_items.append(("explain", "Explanations"))
    if run.export_files:
        nav_items.append(("export", "Export"))
    nav_items.append(("manifest", "Manifest"))
    nav = "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in nav_items)
    problems = ""
    if run.problems:
        problems = '<h2 id="problems">Problems reading this run</h2>' + "".join(
            f'<p class="err">{esc(p)}</p>' for p in run.problems
        )
    if run.manifest is not None:
        manifest = (
            f'<h2 id="manifest">Manifest</h2><details><summary>{esc(run.manifest_path)}</summary>'
            f"<pre>{esc(json.dumps(run.manifest, indent=2, default=str))}</pre></details>"
        )
    else:
        manifest = '<h2 id="manifest">Manifest</h2><p class="muted">No manifest.json in this folder.</p>'
    body = "".join(
        [
            _parts(run),
            _timings(run),
            evaluation_section(run, images),
            slides_section(run, images, max_points),
            training_section(run, images),
            explain_section(run, images),
            export_section(run),
            problems,
            manifest,
            f"<footer>Written {esc(generated)} by wsipipe {esc(version)}. The figures, at print resolution, are "
            "in the <code>figures/</code> folder next to this file.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"{_header(run, title)}<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
