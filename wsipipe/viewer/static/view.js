// The deep-zoom viewport: a canvas showing the slide's JPEG tiles at the view's scale, with
// pan and zoom by mouse, wheel, keyboard and touch. The view is (x, y, ds): the level-0 pixel
// at the canvas centre and the level-0 pixels per screen pixel. Overlays are functions
// (ctx, viewport) drawn after the tiles.

const MIN_DS = 0.25;

export class Viewport {
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.slide = null;
    this.tiles = new Map();      // url -> {img, state: "loading" | "ok" | "failed"}
    this.overlays = [];
    this.x = 0; this.y = 0; this.ds = 1;
    this.pending = 0;            // tiles of the current view still loading
    this.frame = 0;
    this.pointers = new Map();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.bindInput();
    this.resize();
  }

  setSlide(slide) {
    this.slide = slide;
    this.tiles.clear();
    this.fit();
  }

  get width() { return this.canvas.width; }
  get height() { return this.canvas.height; }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width));
    this.canvas.height = Math.max(1, Math.round(r.height));
    this.request();
  }

  fitDs() {
    const s = this.slide;
    return Math.max(s.width / this.width, s.height / this.height) * 1.05;
  }

  fit() {
    if (!this.slide) return;
    this.setView(this.slide.width / 2, this.slide.height / 2, this.fitDs());
  }

  setView(x, y, ds) {
    const s = this.slide;
    if (!s) return;
    this.ds = Math.min(Math.max(ds, MIN_DS), this.fitDs() * 4);
    this.x = Math.min(Math.max(x, 0), s.width);
    this.y = Math.min(Math.max(y, 0), s.height);
    this.request();
    this.onChange?.();
  }

  // level-0 (X, Y) -> canvas px, and back
  toScreen(X, Y) { return [(X - this.x) / this.ds + this.width / 2, (Y - this.y) / this.ds + this.height / 2]; }
  toSlide(sx, sy) { return [(sx - this.width / 2) * this.ds + this.x, (sy - this.height / 2) * this.ds + this.y]; }

  // the finest level not finer than the view: tiles are drawn at scale <= 1 (level 0 when magnified)
  levelFor(ds) {
    const levels = this.slide.levels;
    let best = 0;
    levels.forEach((lv, i) => { if (lv.downsample <= ds * 1.0001) best = i; });
    return best;
  }

  request() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  tile(level, col, row) {
    const url = `/api/slide/${encodeURIComponent(this.slide.id)}/tile/${level}/${col}/${row}.jpg`;
    let t = this.tiles.get(url);
    if (!t) {
      const img = new Image();
      t = { img, state: "loading" };
      img.onload = () => { t.state = "ok"; this.request(); };
      img.onerror = () => { t.state = "failed"; this.request(); };
      img.src = url;
      this.tiles.set(url, t);
      if (this.tiles.size > 800) this.tiles.delete(this.tiles.keys().next().value);
    }
    return t;
  }

  drawLevel(level, fetch) {
    const lv = this.slide.levels[level];
    const T = this.slide.tile_size, d = lv.downsample, ctx = this.ctx;
    const [x0, y0] = this.toSlide(0, 0), [x1, y1] = this.toSlide(this.width, this.height);
    const c0 = Math.max(0, Math.floor(x0 / d / T)), c1 = Math.min(Math.ceil(lv.width / T) - 1, Math.floor(x1 / d / T));
    const r0 = Math.max(0, Math.floor(y0 / d / T)), r1 = Math.min(Math.ceil(lv.height / T) - 1, Math.floor(y1 / d / T));
    let pending = 0;
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const key = `/api/slide/${encodeURIComponent(this.slide.id)}/tile/${level}/${c}/${r}.jpg`;
        const t = fetch ? this.tile(level, c, r) : this.tiles.get(key);
        const tw = Math.min(T, lv.width - c * T), th = Math.min(T, lv.height - r * T);
        const [ax, ay] = this.toScreen(c * T * d, r * T * d), [bx, by] = this.toScreen((c * T + tw) * d, (r * T + th) * d);
        const sx = Math.round(ax), sy = Math.round(ay), sw = Math.round(bx) - sx, sh = Math.round(by) - sy;
        if (t?.state === "ok") ctx.drawImage(t.img, sx, sy, sw, sh);
        else if (t?.state === "failed") drawPlaceholder(ctx, sx, sy, sw, sh);
        else if (fetch) pending++;
      }
    }
    return pending;
  }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, this.width, this.height);
    if (!this.slide) return;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    const level = this.levelFor(this.ds), top = this.slide.levels.length - 1;
    this.drawLevel(top, true);                                   // whole slide, always there
    if (level + 1 < top) this.drawLevel(level + 1, false);       // coarser tiles already loaded
    this.pending = level < top ? this.drawLevel(level, true) : 0;
    for (const overlay of this.overlays) overlay(ctx, this);
    this.onDraw?.();
  }

  // --- input ----------------------------------------------------------------------------
  zoomAt(factor, sx, sy) {
    const [X, Y] = this.toSlide(sx, sy);
    const ds = Math.min(Math.max(this.ds * factor, MIN_DS), this.fitDs() * 4);
    // keep (X, Y) under the cursor
    this.setView(X - (sx - this.width / 2) * ds, Y - (sy - this.height / 2) * ds, ds);
  }

  bindInput() {
    const c = this.canvas;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      this.zoomAt(Math.exp(e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.pointers.set(e.pointerId, [e.clientX, e.clientY]);
      c.classList.add("dragging");
      c.focus();
    });
    c.addEventListener("pointermove", (e) => {
      const prev = this.pointers.get(e.pointerId);
      if (!prev) return;
      const pts = [...this.pointers.values()];
      if (this.pointers.size === 2) {            // pinch: zoom about the midpoint
        const other = pts.find((p) => p !== prev);
        const before = Math.hypot(prev[0] - other[0], prev[1] - other[1]);
        const after = Math.hypot(e.clientX - other[0], e.clientY - other[1]);
        const r = c.getBoundingClientRect();
        if (before > 0 && after > 0) this.zoomAt(before / after, (e.clientX + other[0]) / 2 - r.left, (e.clientY + other[1]) / 2 - r.top);
      } else {
        this.setView(this.x - (e.clientX - prev[0]) * this.ds, this.y - (e.clientY - prev[1]) * this.ds, this.ds);
      }
      this.pointers.set(e.pointerId, [e.clientX, e.clientY]);
    });
    const up = (e) => {
      this.pointers.delete(e.pointerId);
      if (!this.pointers.size) c.classList.remove("dragging");
    };
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
    c.addEventListener("keydown", (e) => {
      const step = Math.min(this.width, this.height) * 0.2 * this.ds;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (moves[e.key]) this.setView(this.x + moves[e.key][0], this.y + moves[e.key][1], this.ds);
      else if (e.key === "+" || e.key === "=") this.zoomAt(1 / 1.5, this.width / 2, this.height / 2);
      else if (e.key === "-" || e.key === "_") this.zoomAt(1.5, this.width / 2, this.height / 2);
      else if (e.key === "0") this.fit();
      else return;
      e.preventDefault();
    });
  }
}

function drawPlaceholder(ctx, x, y, w, h) {
  ctx.save();
  ctx.fillStyle = "#c8c8c8";
  ctx.fillRect(x, y, w, h);
  ctx.strokeStyle = "#dc1e1e";
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.moveTo(x, y); ctx.lineTo(x + w, y + h); ctx.moveTo(x + w, y); ctx.lineTo(x, y + h);
  ctx.stroke();
  ctx.restore();
}

// The minimap: the whole slide (its coarsest tile) with the view's rectangle; a click pans there.
export class Minimap {
  constructor(canvas, viewport) {
    this.canvas = canvas;
    this.viewport = viewport;
    canvas.addEventListener("pointerdown", (e) => {
      const v = this.viewport;
      if (!v.slide) return;
      const r = canvas.getBoundingClientRect(), k = this.scale();
      v.setView((e.clientX - r.left - this.ox) / k, (e.clientY - r.top - this.oy) / k, v.ds);
    });
  }

  scale() {
    const s = this.viewport.slide;
    const k = Math.min(this.canvas.width / s.width, this.canvas.height / s.height);
    this.ox = (this.canvas.width - s.width * k) / 2;
    this.oy = (this.canvas.height - s.height * k) / 2;
    return k;
  }

  draw() {
    const v = this.viewport, ctx = this.canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!v.slide) return;
    const k = this.scale(), top = v.slide.levels.length - 1;
    const t = v.tile(top, 0, 0);
    if (t.state === "ok") ctx.drawImage(t.img, this.ox, this.oy, v.slide.width * k, v.slide.height * k);
    const [x0, y0] = v.toSlide(0, 0), [x1, y1] = v.toSlide(v.width, v.height);
    ctx.strokeStyle = "#d62d20";
    ctx.lineWidth = 2;
    ctx.strokeRect(this.ox + x0 * k, this.oy + y0 * k, Math.max(2, (x1 - x0) * k), Math.max(2, (y1 - y0) * k));
  }
}
