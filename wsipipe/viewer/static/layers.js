// Overlay layers drawn over the tiles, each a function (ctx, viewport). Coordinates from the
// server are level-0 px; colours of the ground truth follow the evaluation (hit, miss, ITC, FP).

export const GT_COLOURS = { hit: "#1e9e4a", miss: "#d62d20", itc: "#f39c12", unevaluated: "#1f5fa8", region: "#7f8c8d" };
const FP_COLOUR = "#c322c3";

// A jet-like colour map, value in [0, 1] -> [r, g, b].
export function colour(v) {
  const f = (x) => Math.round(255 * Math.min(Math.max(x, 0), 1));
  return [f(1.5 - Math.abs(4 * v - 3)), f(1.5 - Math.abs(4 * v - 2)), f(1.5 - Math.abs(4 * v - 1))];
}

export function drawColourBar(canvas) {
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < canvas.width; i++) {
    ctx.fillStyle = `rgb(${colour(i / (canvas.width - 1)).join(",")})`;
    ctx.fillRect(i, 0, 1, canvas.height);
  }
}

// The heatmap as a (cols x rows) image, rebuilt when the opacity or threshold changes.
export class HeatmapLayer {
  constructor(data) {
    this.data = data;
    this.opacity = 0.5;
    this.threshold = 0;
    this.image = null;
  }

  setStyle(opacity, threshold) {
    if (opacity !== this.opacity || threshold !== this.threshold) this.image = null;
    this.opacity = opacity;
    this.threshold = threshold;
  }

  build() {
    const { rows, cols, values } = this.data;
    const canvas = document.createElement("canvas");
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows);
    const alpha = Math.round(255 * this.opacity);
    values.forEach((v, i) => {
      if (v === null || v < this.threshold) return;
      const [r, g, b] = colour(v);
      img.data.set([r, g, b, alpha], 4 * i);
    });
    ctx.putImageData(img, 0, 0);
    this.image = canvas;
  }

  draw(ctx, view) {
    const d = this.data;
    if (!d.values) return;
    if (!this.image) this.build();
    const [ox, oy] = d.origin, [sx, sy] = d.cell_size;
    const [ax, ay] = view.toScreen(ox, oy), [bx, by] = view.toScreen(ox + d.cols * sx, oy + d.rows * sy);
    ctx.save();
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.image, ax, ay, bx - ax, by - ay);
    ctx.restore();
  }
}

function path(ctx, view, pts, close) {
  ctx.beginPath();
  pts.forEach(([x, y], i) => {
    const [sx, sy] = view.toScreen(x, y);
    if (i === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
  });
  if (close) ctx.closePath();
}

export function drawTissue(ctx, view, data) {
  ctx.save();
  ctx.strokeStyle = "#34495e";
  ctx.lineWidth = 1.5;
  ctx.setLineDash([6, 4]);
  for (const line of data.lines || []) { path(ctx, view, line, true); ctx.stroke(); }
  ctx.restore();
}

export function drawDetections(ctx, view, detections, selected) {
  ctx.save();
  ctx.font = "bold 12px system-ui, sans-serif";
  ctx.lineWidth = 2;
  for (const d of detections.slice().reverse()) {
    const [sx, sy] = view.toScreen(d.x, d.y);
    if (sx < -20 || sy < -20 || sx > view.width + 20 || sy > view.height + 20) continue;
    ctx.strokeStyle = d.rank === selected ? "#ffd400" : "#111";
    ctx.fillStyle = d.rank === selected ? "#ffd400" : "#ffffff";
    ctx.beginPath();
    ctx.arc(sx, sy, 7, 0, 2 * Math.PI);
    ctx.stroke();
    if (d.rank <= 50) {
      ctx.strokeStyle = "#111";
      ctx.strokeText(String(d.rank), sx + 9, sy - 7);
      ctx.fillText(String(d.rank), sx + 9, sy - 7);
    }
  }
  ctx.restore();
}

export function drawGroundTruth(ctx, view, data) {
  ctx.save();
  ctx.lineWidth = 2.5;
  for (const region of data.regions || []) {
    ctx.strokeStyle = GT_COLOURS[region.status] || GT_COLOURS.region;
    path(ctx, view, region.ring, true);
    ctx.stroke();
  }
  ctx.strokeStyle = FP_COLOUR;
  for (const fp of data.false_positives || []) {
    const [sx, sy] = view.toScreen(fp.x, fp.y);
    ctx.beginPath();
    ctx.moveTo(sx - 6, sy - 6); ctx.lineTo(sx + 6, sy + 6); ctx.moveTo(sx + 6, sy - 6); ctx.lineTo(sx - 6, sy + 6);
    ctx.stroke();
  }
  ctx.restore();
}

export function drawExplain(ctx, view, data) {
  ctx.save();
  ctx.fillStyle = "#00b8d4";
  ctx.strokeStyle = "#004c5a";
  for (const p of data.points || []) {
    const [sx, sy] = view.toScreen(p.x, p.y);
    ctx.beginPath();
    ctx.moveTo(sx, sy - 8); ctx.lineTo(sx + 8, sy); ctx.lineTo(sx, sy + 8); ctx.lineTo(sx - 8, sy);
    ctx.closePath();
    ctx.fill();
    ctx.stroke();
  }
  ctx.restore();
}
