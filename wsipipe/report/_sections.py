"""The report's sections on evaluation, slides, training, explanations and exports (HTML strings).

All text from files is escaped with :func:`~wsipipe.report._markup.esc`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wsipipe.report._collect import RunData, SlideView
from wsipipe.report._markup import anchor, esc, figure, fmt, fmt_seconds, html_table, status_badge
from wsipipe.storage import input_size, output_exists

__all__ = ["Images", "evaluation_section", "explain_section", "export_section", "slides_section", "training_section"]

#: Image key -> data URI: ``"slide:<id>"``, ``"roc_froc"``, ``"train:<name>"``, ``"explain:<path>"``.
Images = Mapping[str, str]


def evaluation_section(run: RunData, images: Images) -> str:
    ev = run.evaluation
    if ev is None:
        return (
            '<h2 id="evaluation">Evaluation</h2><p class="muted">No <code>evaluation/evaluation.json</code>: '
            "run the evaluate stage to get the FROC, the slide AUC and their plots.</p>"
        )
    froc, auc = ev.get("froc") or {}, ev.get("auc") or {}
    kpis = []
    if froc.get("score") is not None:
        kpis.append(("FROC score", fmt(froc["score"]), f"CAMELYON16, {froc.get('n_targets', '?')} target lesions"))
    if auc.get("auc") is not None:
        ci = auc.get("ci") or [None, None]
        level = 100 * float(auc.get("ci_level", 0.95))
        kpis.append(("slide AUC", fmt(auc["auc"]), f"{level:g}% CI {fmt(ci[0], 3)}–{fmt(ci[1], 3)}"))
    kpi_html = "".join(f"<div><b>{esc(v)}</b><span>{esc(k)} · {esc(n)}</span></div>" for k, v, n in kpis)
    rows = []
    for rate, sens in (froc.get("sensitivities") or {}).items():
        rows.append([esc(f"sensitivity at {rate} FP/slide"), esc(fmt(sens))])
    if froc:
        rows.append(
            [
                esc("FROC slides / target lesions"),
                esc(f"{froc.get('n_slides', 'n/a')} / {froc.get('n_targets', 'n/a')}"),
            ]
        )
        rows.append([esc("FROC tie mode"), esc(froc.get("tie_mode", "n/a"))])
    if auc:
        rows.append(
            [esc("AUC tumour / normal slides"), esc(f"{auc.get('n_tumor', 'n/a')} / {auc.get('n_normal', 'n/a')}")]
        )
        if auc.get("missing_slides"):
            rows.append([esc("slides without a score"), esc(", ".join(map(str, auc["missing_slides"])))])
    rows.append([esc("labels from"), esc(ev.get("label_source", "n/a"))])
    errors = "".join(
        f'<p class="err">{esc(k.upper())} not computed: {esc(v["error"])}</p>'
        for k, v in (("froc", froc), ("auc", auc))
        if isinstance(v, Mapping) and v.get("error")
    )
    parts = [
        '<h2 id="evaluation">Evaluation</h2>',
        f'<div class="kpi">{kpi_html}</div>' if kpi_html else "",
        errors,
        html_table(["metric", "value"], rows, numeric=(1,)),
        figure(images.get("roc_froc"), "ROC and FROC curves", "Slide-level ROC (left) and lesion-level FROC (right)."),
        _lesion_tables(ev.get("slides") or []),
    ]
    return "".join(parts)


def _lesion_tables(slides: Sequence[Any]) -> str:
    slides = [s for s in slides if isinstance(s, Mapping)]
    if not slides:
        return ""
    rows = [
        [
            f'<a href="#{anchor(str(s.get("slide")))}">{esc(s.get("slide"))}</a>',
            esc(fmt(s.get("is_tumor"))),
            *(esc(s.get(k, "")) for k in ("n_detections", "n_targets", "n_itc", "n_hits", "n_fp", "n_duplicates")),
        ]
        for s in slides
    ]
    table = html_table(
        ["slide", "tumour", "detections", "targets", "ITC", "hits", "FP", "duplicates"],
        rows,
        numeric=(2, 3, 4, 5, 6, 7),
    )
    lesions = [(s.get("slide"), les) for s in slides for les in s.get("lesions") or [] if isinstance(les, Mapping)]
    targets = [les for _, les in lesions if not les.get("is_itc")]
    hits = sum(1 for les in targets if les.get("hit"))
    summary = (
        f"{len(lesions)} annotated lesions: {len(targets)} FROC targets ({hits} detected, {len(targets) - hits} "
        f"missed) and {len(lesions) - len(targets)} isolated tumour cells (ITC, ignored)."
    )
    lrows = [
        [
            esc(sid),
            esc(les.get("label")),
            esc(fmt(les.get("major_axis_um"), 1)),
            esc(fmt(les.get("area_um2"), 0)),
            esc(f"({fmt(les.get('centroid_x'), 0)}, {fmt(les.get('centroid_y'), 0)})"),
            esc("ITC" if les.get("is_itc") else ("hit" if les.get("hit") else "missed")),
            esc(fmt(les.get("confidence"), 3) if les.get("confidence") is not None else ""),
        ]
        for sid, les in lesions
    ]
    ltable = html_table(
        ["slide", "lesion", "major axis (µm)", "area (µm²)", "centroid (level-0 px)", "outcome", "confidence"],
        lrows,
        numeric=(1, 2, 3, 6),
    )
    return (
        f"<h3>Per slide</h3>{table}<h3>Lesions</h3><p>{esc(summary)}</p>"
        f"<details><summary>All {len(lesions)} lesions</summary>{ltable}</details>"
    )


def _slide_card(view: SlideView, images: Images, max_points: int, out_dir: Path) -> str:
    sid = view.slide_id
    label = status_badge(view.label) if view.label else '<span class="badge">label unknown</span>'
    facts: list[tuple[str, Any]] = []
    if "probability" in view.scores:
        facts.append(("slide score (max)", fmt(view.scores["probability"])))
    for key, value in view.scores.items():
        if key != "probability":
            facts.append((key.replace("_", " "), fmt(value)))
    facts.append(("tiles", view.n_tiles if view.n_tiles is not None else "n/a"))
    facts.append(("detections", len(view.points) if view.has_lesions_csv else "n/a"))
    if view.model:
        facts.append(("model", view.model))
    if view.mpp:
        facts.append(("level-0 µm/px", fmt(view.mpp, 3)))
    if view.level0_size:
        facts.append(("level-0 size (px)", f"{view.level0_size[0]} × {view.level0_size[1]}"))
    if view.evaluation:
        ev = view.evaluation
        facts.append(("lesions hit", f"{ev.get('n_hits', '?')} / {ev.get('n_targets', '?')}"))
        facts.append(("false positives", ev.get("n_fp", "?")))
    fact_html = "".join(f"<span>{esc(k)}: <b>{esc(v)}</b></span>" for k, v in facts)
    stages = [
        [
            f"<b>{esc(st)}</b>",
            status_badge(item.get("status")),
            esc(fmt_seconds(item.get("seconds"))),
            esc(item.get("message") or ""),
        ]
        for st, item in view.statuses.items()
    ]
    stage_html = html_table(["stage", "status", "time", "message"], stages, numeric=(2,)) if stages else ""
    if view.store is None:
        picture = '<p class="muted">No patch store: no thumbnail, tissue mask or heatmap (run the tile stage).</p>'
    else:
        picture = figure(
            images.get(f"slide:{sid}"),
            f"{sid}: thumbnail, tissue mask and heatmap",
            "Left: slide with the tissue-mask outline (green). Right: tumour-probability heatmap with the NMS "
            "detections numbered by confidence.",
        )
        if view.model is None and view.store is not None:
            picture += '<p class="muted">No tile predictions in the store yet (run the infer stage).</p>'
    points = ""
    if view.points:
        shown = view.points[:max_points]
        prow = [[esc(k), esc(fmt(c, 4)), esc(x), esc(y)] for k, (c, x, y) in enumerate(shown, start=1)]
        points = (
            f"<details><summary>{len(shown)} of {len(view.points)} detections (level-0 px)</summary>"
            + html_table(["#", "confidence", "x", "y"], prow, numeric=(0, 1, 2, 3))
            + "</details>"
        )
    problems = "".join(f'<p class="err">{esc(p)}</p>' for p in view.problems)
    return (
        f'<section class="card" id="{anchor(sid)}"><div class="slide-head"><h3>{esc(sid)}</h3>{label}</div>'
        f'<div class="facts">{fact_html}</div>{picture}{viewer_link(view, out_dir)}{points}{stage_html}{problems}</section>'
    )


#: Where ``wsipipe view`` serves by default (``--host 127.0.0.1 --port 8765``).
VIEWER_URL = "http://127.0.0.1:8765/"


def viewer_link(view: SlideView, out_dir: Path) -> str:
    """A link that opens the slide in ``wsipipe view``, with the command that starts the viewer."""
    if view.store is None:
        return ""
    href = f"{VIEWER_URL}#slide={quote(view.slide_id, safe='')}"
    command = f"wsipipe view {shlex.quote(str(out_dir))}"
    return (
        f'<p class="viewer"><a href="{esc(href)}">Open {esc(view.slide_id)} in the viewer</a> (deep zoom with the '
        f"heatmap, detections and ground truth) once it runs: <code>{esc(command)}</code></p>"
    )


def slides_section(run: RunData, images: Images, max_points: int) -> str:
    if not run.slides:
        return '<h2 id="slides">Slides</h2><p class="muted">No slides: no patch stores, detections or scores.</p>'
    rows = []
    for v in run.slides:
        worst = next((i["status"] for i in v.statuses.values() if i.get("status") == "failed"), None)
        rows.append(
            [
                f'<a href="#{anchor(v.slide_id)}">{esc(v.slide_id)}</a>',
                esc(v.label or "unknown"),
                esc(fmt(v.scores.get("probability"))),
                esc(len(v.points) if v.has_lesions_csv else "n/a"),
                esc(v.n_tiles if v.n_tiles is not None else "n/a"),
                status_badge(worst) if worst else status_badge("done" if v.statuses else None),
            ]
        )
    table = html_table(["slide", "label", "score", "detections", "tiles", "status"], rows, numeric=(2, 3, 4))
    cards = "".join(_slide_card(v, images, max_points, run.out_dir) for v in run.slides)
    return f'<h2 id="slides">Slides ({len(run.slides)})</h2>{table}{cards}'


def training_section(run: RunData, images: Images) -> str:
    if not run.training:
        return ""
    parts = ['<h2 id="training">Training</h2>']
    for tr in run.training:
        rows = tr.rows
        best = min(
            rows, key=lambda r: r.get("val_loss", math.inf) if math.isfinite(r.get("val_loss", math.nan)) else math.inf
        )
        cols = [
            c for c in ("epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds") if c in rows[0]
        ]
        trows = [[esc(fmt(r.get(c), 4 if c != "epoch" else 0)) for c in cols] for r in (rows[-1], best)]
        trows[0][0] = f"last ({trows[0][0]})"
        trows[1][0] = f"best val. loss ({trows[1][0]})"
        parts.append(f'<section class="card"><h3>{esc(tr.name)}</h3>')
        parts.append(html_table(cols, trows, numeric=tuple(range(1, len(cols)))))
        parts.append(
            figure(
                images.get(f"train:{tr.name}"),
                f"training curves of {tr.name}",
                "Loss and validation metrics per epoch.",
            )
        )
        parts.append("</section>")
    return "".join(parts)


def explain_section(run: RunData, images: Images) -> str:
    if not (run.explain_pngs or run.explain_metrics):
        return ""
    parts = ['<h2 id="explain">Explanations</h2>']
    if run.explain_metrics:
        methods: dict[str, list[Mapping[str, str]]] = {}
        for row in run.explain_metrics:
            methods.setdefault(row.get("method", "?"), []).append(row)
        keys = [k for k in run.explain_metrics[0] if k not in ("slide", "point", "x", "y", "confidence", "method")]
        rows = []
        for method, sel in methods.items():
            means = []
            for key in keys:
                vals = [float(r[key]) for r in sel if _is_float(r.get(key))]
                means.append(esc(f"{sum(vals) / len(vals):.3f}" if vals else "n/a"))
            rows.append([esc(method), esc(len(sel)), *means])
        parts.append("<p>Localization metrics, mean over points:</p>")
        parts.append(html_table(["method", "points", *keys], rows, numeric=tuple(range(1, len(keys) + 2))))
    shown = [k for k in images if k.startswith("explain:")]
    for key in shown:
        parts.append(figure(images[key], key, key.split(":", 1)[1]))
    if len(run.explain_pngs) > len(shown):
        parts.append(f'<p class="muted">{len(run.explain_pngs) - len(shown)} more panels in explain/.</p>')
    return "".join(parts)


def _is_float(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


def export_section(run: RunData) -> str:
    if not run.export_files:
        return ""
    rows = [
        [esc(p.relative_to(run.out_dir)), esc(f"{input_size(p) / 1024:.1f}")]
        for p in run.export_files[:200]
        if output_exists(p)
    ]
    return '<h2 id="export">Exported files</h2>' + html_table(["file", "size (KiB)"], rows, numeric=(1,))
