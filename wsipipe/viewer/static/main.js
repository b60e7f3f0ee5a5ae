// The viewer page: the run's slide list, the deep-zoom view with its layers, the detection and
// explanation lists, the scale bar, and the view kept in the URL's hash:
//   #slide=<id>&x=<level-0 x>&y=<level-0 y>&ds=<level-0 px per screen px>&layers=a,b&opacity=0.5&threshold=0
// window.wsipipeViewer is the app, for scripts and tests.

import { Minimap, Viewport } from "./view.js";
import { HeatmapLayer, drawColourBar, drawDetections, drawExplain, drawGroundTruth, drawTissue } from "./layers.js";

const $ = (id) => document.getElementById(id);
const LAYERS = ["tissue", "heatmap", "detections", "gt", "explain"];
const DEFAULT_LAYERS = ["tissue", "heatmap", "detections"];

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

function fmt(v, digits = 3) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

class App {
  constructor() {
    this.run = null;
    this.slide = null;
    this.overlays = {};
    this.heatmap = null;
    this.layers = new Set(DEFAULT_LAYERS);
    this.selected = null;
    this.ready = false;
    this.viewport = new Viewport($("view"), () => this.viewChanged());
    this.minimap = new Minimap($("minimap"), this.viewport);
    this.viewport.onDraw = () => { this.minimap.draw(); this.drawScaleBar(); $("status").textContent = this.statusText(); };
    this.viewport.overlays.push((ctx, v) => this.drawOverlays(ctx, v));
    drawColourBar($("colorbar"));
    for (const box of document.querySelectorAll("[data-layer]")) {
      box.addEventListener("change", () => {
        if (box.checked) this.layers.add(box.dataset.layer); else this.layers.delete(box.dataset.layer);
        this.viewport.request();
        this.writeHash();
      });
    }
    for (const id of ["opacity", "threshold"]) $(id).addEventListener("input", () => this.styleChanged());
    window.addEventListener("hashchange", () => this.applyHash());
  }

  async start() {
    this.run = await getJSON("/api/run");
    $("run-name").textContent = `${this.run.name}${this.run.froc_score != null ? ` · FROC ${fmt(this.run.froc_score)}` : ""}`;
    this.renderSlides();
    const hash = this.parseHash();
    const first = this.run.slides.find((s) => s.viewable);
    const id = hash.slide && this.run.slides.some((s) => s.id === hash.slide) ? hash.slide : first?.id;
    if (id) await this.open(id, hash);
    this.ready = true;
  }

  parseHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const num = (k) => (p.has(k) && Number.isFinite(Number(p.get(k))) ? Number(p.get(k)) : null);
    return {
      slide: p.get("slide"), x: num("x"), y: num("y"), ds: num("ds"),
      layers: p.has("layers") ? p.get("layers").split(",").filter((l) => LAYERS.includes(l)) : null,
      opacity: num("opacity"), threshold: num("threshold"),
    };
  }

  hashText() {
    const v = this.viewport;
    const p = new URLSearchParams({
      slide: this.slide.id, x: v.x.toFixed(1), y: v.y.toFixed(1), ds: Number(v.ds.toPrecision(6)).toString(),
      layers: LAYERS.filter((l) => this.layers.has(l)).join(","), opacity: $("opacity").value, threshold: $("threshold").value,
    });
    return "#" + p.toString().replaceAll("%2C", ",");
  }

  writeHash() {
    if (!this.slide) return;
    const text = this.hashText();
    if (text !== location.hash) history.replaceState(null, "", text);
  }

  async applyHash() {
    if (this.slide && location.hash === this.hashText()) return;
    const hash = this.parseHash();
    if (hash.slide && hash.slide !== this.slide?.id) await this.open(hash.slide, hash);
    else this.applyView(hash);
  }

  applyView(hash) {
    if (hash.layers) this.layers = new Set(hash.layers);
    for (const box of document.querySelectorAll("[data-layer]")) box.checked = this.layers.has(box.dataset.layer);
    if (hash.opacity !== null) $("opacity").value = hash.opacity;
    if (hash.threshold !== null) $("threshold").value = hash.threshold;
    this.styleChanged();
    const v = this.viewport;
    if (hash.x !== null && hash.y !== null && hash.ds !== null) v.setView(hash.x, hash.y, hash.ds);
    else v.fit();
  }

  async open(id, hash = {}) {
    this.ready = false;
    this.slide = await getJSON(`/api/slide/${encodeURIComponent(id)}`);
    this.overlays = {};
    this.heatmap = null;
    this.selected = null;
    const kinds = ["heatmap", "tissue", "gt", "explain"];
    const got = await Promise.all(kinds.map((k) => getJSON(`/api/slide/${encodeURIComponent(id)}/overlay/${k}`)));
    kinds.forEach((k, i) => { this.overlays[k] = got[i]; });
    if (this.overlays.heatmap.values) this.heatmap = new HeatmapLayer(this.overlays.heatmap);
    this.viewport.setSlide(this.slide);
    this.applyView({ layers: null, opacity: null, threshold: null, x: null, y: null, ds: null, ...hash });
    this.renderSlides();
    this.renderDetections();
    this.renderExplain();
    this.renderProblems();
    this.ready = true;
  }

  styleChanged() {
    $("threshold-value").textContent = fmt($("threshold").value, 2);
    this.heatmap?.setStyle(Number($("opacity").value), Number($("threshold").value));
    this.viewport.request();
    this.writeHash();
  }

  viewChanged() {
    clearTimeout(this.hashTimer);
    this.hashTimer = setTimeout(() => this.writeHash(), 150);
  }

  goTo(x, y, rank = null) {
    this.selected = rank;
    const ds = Math.min(this.viewport.ds, 2);
    this.viewport.setView(x, y, ds);
    this.writeHash();
  }

  drawOverlays(ctx, v) {
    const on = (l) => this.layers.has(l);
    if (on("heatmap") && this.heatmap) this.heatmap.draw(ctx, v);
    if (on("tissue") && this.overlays.tissue) drawTissue(ctx, v, this.overlays.tissue);
    if (on("gt") && this.overlays.gt) drawGroundTruth(ctx, v, this.overlays.gt);
    if (on("explain") && this.overlays.explain) drawExplain(ctx, v, this.overlays.explain);
    if (on("detections")) drawDetections(ctx, v, this.slide.detections, this.selected);
  }

  drawScaleBar() {
    const mpp = this.slide?.mpp;
    if (!mpp) return;
    const perPx = mpp * this.viewport.ds, target = 120 * perPx;
    const pow = 10 ** Math.floor(Math.log10(target));
    const um = [5, 2, 1].map((m) => m * pow).find((u) => u <= target) || pow;
    $("scalebar-bar").style.width = `${Math.round(um / perPx)}px`;
    $("scalebar-text").textContent = um >= 1000 ? `${um / 1000} mm` : `${um} µm`;
  }

  statusText() {
    const v = this.viewport;
    return `${this.slide.id} · ${(this.slide.mpp ? 10 / (this.slide.mpp * v.ds) : 0).toFixed(2)}× · level ${v.levelFor(v.ds)}` +
      (v.pending ? ` · loading ${v.pending}` : "");
  }

  renderSlides() {
    const body = $("slides").tBodies[0];
    body.replaceChildren();
    for (const s of this.run.slides) {
      const hits = s.froc_hits != null ? `${s.froc_hits}/${s.froc_targets}` : "–";
      const row = el("tr", { className: `slide${s.id === this.slide?.id ? " current" : ""}${s.viewable ? "" : " unviewable"}` },
        el("td", { textContent: s.id }), el("td", { textContent: s.label || "?" }),
        el("td", { className: "num", textContent: fmt(s.score) }), el("td", { className: "num", textContent: s.n_detections }),
        el("td", { className: "num", textContent: hits }));
      row.dataset.slide = s.id;
      if (s.viewable) row.addEventListener("click", () => this.open(s.id).then(() => this.writeHash()));
      else row.title = s.problems.join("; ");
      body.append(row);
    }
  }

  renderDetections() {
    const list = $("detections");
    list.replaceChildren();
    for (const d of this.slide.detections) {
      const item = el("li", { textContent: `${fmt(d.confidence)} at (${d.x}, ${d.y})` });
      item.dataset.rank = d.rank;
      item.addEventListener("click", () => this.goTo(d.x, d.y, d.rank));
      list.append(item);
    }
  }

  renderExplain() {
    const box = $("explain"), points = this.overlays.explain?.points || [];
    box.replaceChildren();
    $("explain-section").hidden = !points.length;
    for (const p of points) {
      const fig = el("figure", {}, el("figcaption", { textContent: `point ${p.point} (${Math.round(p.x)}, ${Math.round(p.y)}) · ${p.methods.join(", ")}` }));
      if (p.image) fig.prepend(el("img", { src: p.image, alt: `explanation of point ${p.point}` }));
      fig.addEventListener("click", () => this.goTo(p.x, p.y));
      box.append(fig);
    }
  }

  renderProblems() {
    const problems = [...(this.slide.problems || [])];
    for (const o of Object.values(this.overlays)) problems.push(...(o.problems || []));
    $("problems").replaceChildren(...problems.map((p) => el("div", { textContent: p })));
  }
}

const app = new App();
window.wsipipeViewer = app;
app.start().catch((err) => { $("status").textContent = String(err); throw err; });
