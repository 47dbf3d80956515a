// One viewport: a series in a plane, drawn from the server's render endpoint onto a canvas.
//
// Scrolling never waits for the server: the slice number follows the input at once, the
// image already cached is drawn at once, and at most one display request is in flight; when it
// lands the newest wanted slice is asked for (slices the user scrolled past are skipped).
// Neighbouring slices ahead of the scroll direction are prefetched; loads that no longer match
// (another window, plane or series) are aborted.

import { seriesPath, withQuery } from "./api.js";
import { ImageCache, isAbort } from "./cache.js";
import { dicomDate, personName } from "./format.js";
import { labelValues, paintLabels } from "./labels.js";

const SIZES = [256, 384, 512, 768, 1024, 1536, 2048];
const PREFETCH_AHEAD = 6;
const PREFETCH_BEHIND = 1;
const PLANE_AXIS = { axial: 0, coronal: 1, sagittal: 2 };
const SVG = "http://www.w3.org/2000/svg";

export const PLANES = Object.keys(PLANE_AXIS);

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.append(node);
  return node;
}

const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

export class Viewport {
  constructor(app, id) {
    this.app = app;
    this.id = id;
    this.root = element("div", "vx-viewport");
    this.root.tabIndex = 0;
    this.root.dataset.viewport = String(id);
    this.root.dataset.state = "empty";
    this.canvas = element("canvas", "vx-canvas", this.root);
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.classList.add("vx-annotations");
    this.root.append(this.svg);
    this.corners = {};
    for (const corner of ["tl", "tr", "bl", "br"]) {
      this.corners[corner] = element("div", `vx-corner ${corner}`, this.root);
    }
    this.edges = {};
    for (const edge of ["top", "bottom", "left", "right"]) {
      this.edges[edge] = element("div", `vx-orient ${edge}`, this.root);
    }
    this.message = element("div", "vx-message", this.root);
    this.message.textContent = "Drop a series here";
    this.series = null;
    this.measurements = [];
    this.draft = null;
    this.crosshair = null;
    this.shown = null;
    this.labelLayers = [];
    this.wanted = null;
    this.inflight = null;
    this.direction = 1;
    this.scheduled = false;
    this.resetView();
    new ResizeObserver(() => this.resize()).observe(this.root);
  }

  // --- state ------------------------------------------------------------------------------

  resetView() {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.invert = false;
    const window = this.series?.window;
    this.ww = window?.width ?? 400;
    this.wc = window?.center ?? 40;
  }

  /** Show `series` (from the study document) in `plane`, starting in the middle. */
  setSeries(series, plane = "axial") {
    this.series = series;
    this.plane = plane;
    this.mode = "slice";
    this.slab = 0;
    this.measurements = [];
    this.crosshair = null;
    this.forget();
    this.labelLayers = [];
    this.resetView();
    this.count = this.planeCount(plane);
    this.index = Math.floor(this.count / 2);
    this.root.dataset.series = series.series_instance_uid;
    this.message.textContent = "";
    this.update();
  }

  /** Stop showing the current image (it may be evicted and closed from now on). */
  forget() {
    if (this.shown) ImageCache.unpin(this.shown.entry);
    this.shown = null;
  }

  clear() {
    this.series = null;
    this.forget();
    delete this.root.dataset.series;
    this.root.dataset.state = "empty";
    this.message.textContent = "Drop a series here";
    this.draw();
  }

  planeCount(plane) {
    const volume = this.series?.volume;
    if (volume?.valid && Array.isArray(volume.dims)) return volume.dims[PLANE_AXIS[plane]];
    return Math.max(1, this.series?.number_of_instances ?? 1);
  }

  setPlane(plane, index = null) {
    if (!this.series || !(plane in PLANE_AXIS)) return;
    if (plane !== this.plane) {
      this.plane = plane;
      this.count = this.planeCount(plane);
      this.forget();
      this.crosshair = null;
    }
    this.index = index ?? Math.floor(this.count / 2);
    this.update();
  }

  setMode(mode, slab) {
    this.mode = mode;
    this.slab = mode === "slice" ? 0 : slab;
    this.update();
  }

  setWindow(width, center) {
    this.ww = Math.max(1, Math.round(width));
    this.wc = Math.round(center);
    this.update();
  }

  setIndex(index) {
    if (!this.series) return;
    const next = clamp(Math.round(index), 0, this.count - 1);
    if (next === this.index) return;
    this.direction = next > this.index ? 1 : -1;
    this.index = next;
    this.update();
  }

  step(delta, { wrap = false } = {}) {
    if (!this.series) return;
    if (wrap) this.setIndex((((this.index + delta) % this.count) + this.count) % this.count);
    else this.setIndex(this.index + delta);
  }

  /** Redraw what is known now and ask for the image on the next frame (coalescing input). */
  update() {
    if (this.series) this.root.dataset.state = "loading"; // until the wanted image is drawn
    this.writeState();
    this.drawText();
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.request();
    });
  }

  writeState() {
    const data = this.root.dataset;
    if (!this.series) return;
    data.plane = this.plane;
    data.mode = this.mode;
    data.slab = String(this.slab);
    data.wantedIndex = String(this.index);
    data.count = String(this.count);
    data.ww = String(this.ww);
    data.wc = String(this.wc);
    data.invert = this.invert ? "1" : "0";
    data.zoom = this.zoom.toFixed(3);
  }

  // --- requests -----------------------------------------------------------------------------

  /** The output size for this viewport: the smallest standard edge covering its pixels. */
  outputSize() {
    const edge = Math.max(this.canvas.width, this.canvas.height, 1);
    return SIZES.find((size) => size >= edge) ?? SIZES[SIZES.length - 1];
  }

  renderUrl(index, size = this.outputSize()) {
    return withQuery(`${seriesPath(this.series.series_instance_uid)}/render`, {
      plane: this.plane,
      index,
      wc: this.wc,
      ww: this.ww,
      mode: this.mode,
      slab: this.mode === "slice" ? null : this.slab,
      size,
      invert: this.invert ? 1 : 0,
      format: "png",
    });
  }

  labelUrl(segUid, index, size = this.outputSize()) {
    return withQuery(`${seriesPath(segUid)}/labels`, {
      plane: this.plane,
      index,
      size,
      source: this.series.series_instance_uid,
    });
  }

  /** The render URL with its index left out: equal for images of the same stack. */
  stackKey(url) {
    return url.replace(/([?&])index=\d+/, "$1");
  }

  request() {
    if (!this.series) return;
    const url = this.renderUrl(this.index);
    this.wanted = url;
    const stack = this.stackKey(url);
    const cache = this.app.images;
    // Loads of another stack (window, plane, mode, size or series changed) are stale.
    // The display load in flight is kept, so a fast scroll still shows progress.
    const keep = (other) =>
      this.stackKey(other) === stack && (other === this.inflight || this.isNear(other));
    cache.releaseAll(this, keep);
    const samePlane = `plane=${this.plane}&`;
    this.app.labels.releaseAll(this, (other) => other.includes(samePlane) && this.isNear(other));
    const cached = cache.get(url);
    if (cached) {
      this.show(url, cached);
      return;
    }
    if (this.inflight && this.stackKey(this.inflight) === stack && cache.isPending(this.inflight)) {
      return; // coalesced: when the one in flight lands, the newest wanted slice is asked for
    }
    this.fetchDisplay(url);
  }

  isNear(url) {
    const match = /[?&]index=(\d+)/.exec(url);
    if (!match) return false;
    const offset = (Number(match[1]) - this.index) * this.direction;
    return offset >= -PREFETCH_BEHIND && offset <= PREFETCH_AHEAD;
  }

  fetchDisplay(url) {
    this.inflight = url;
    this.root.dataset.state = "loading";
    this.app.images.load(url, this).then(
      (entry) => {
        if (this.inflight === url) this.inflight = null;
        if (!this.series || this.stackKey(url) !== this.stackKey(this.wanted)) return;
        this.show(url, entry); // an intermediate slice is still feedback while scrolling
        if (url !== this.wanted) this.request();
      },
      (error) => {
        if (this.inflight === url) this.inflight = null;
        if (isAbort(error)) return;
        if (url === this.wanted) this.fail(error);
      },
    );
  }

  fail(error) {
    this.root.dataset.state = "error";
    this.message.textContent = error.message;
    this.app.reportError(error);
  }

  show(url, entry) {
    const fresh = !this.shown || this.shown.url !== url;
    ImageCache.pin(entry);
    if (this.shown) ImageCache.unpin(this.shown.entry);
    this.shown = { url, entry, index: entry.index ?? this.indexOf(url) };
    if (entry.planeSize && entry.planeSize !== this.count) {
      this.count = entry.planeSize;
      this.index = clamp(this.index, 0, this.count - 1);
    }
    this.message.textContent = "";
    this.root.dataset.index = String(this.shown.index);
    this.root.dataset.pixelSpacing = String(entry.pixelSpacing ?? "");
    this.root.dataset.imageWidth = String(entry.width);
    this.root.dataset.imageHeight = String(entry.height);
    this.root.dataset.state = url === this.wanted ? "ready" : "loading";
    if (fresh) this.loadLabels();
    this.draw();
    if (url === this.wanted) this.prefetch();
  }

  indexOf(url) {
    const match = /[?&]index=(\d+)/.exec(url);
    return match ? Number(match[1]) : this.index;
  }

  prefetch() {
    const overlays = this.app.overlaysFor(this.series);
    for (let k = -PREFETCH_BEHIND; k <= PREFETCH_AHEAD; k += 1) {
      const index = this.index + k * this.direction;
      if (k === 0 || index < 0 || index >= this.count) continue;
      this.app.images.load(this.renderUrl(index), this).catch(() => {});
      for (const overlay of overlays) {
        this.app.labels.load(this.labelUrl(overlay.uid, index), this, { raw: true }).catch(() => {});
      }
    }
  }

  /** Fetch the label maps of the shown slice for every overlay switched on. */
  loadLabels() {
    const shown = this.shown;
    const overlays = this.app.overlaysFor(this.series);
    if (!shown || !overlays.length) {
      this.labelLayers = [];
      this.root.dataset.overlay = "none";
      return;
    }
    const size = this.outputSize();
    const jobs = overlays.map((overlay) => {
      const url = this.labelUrl(overlay.uid, shown.index, size);
      return this.app.labels.load(url, this, { raw: true }).then((entry) => {
        entry.values ??= labelValues(entry.bitmap);
        return { overlay, entry };
      });
    });
    this.root.dataset.overlay = "loading";
    Promise.all(jobs).then(
      (layers) => {
        if (this.shown !== shown) return;
        this.labelLayers = layers;
        this.root.dataset.overlay = "ready";
        this.draw();
      },
      (error) => {
        if (isAbort(error) || this.shown !== shown) return;
        this.root.dataset.overlay = "error";
        this.app.reportError(error);
      },
    );
  }

  // --- drawing ------------------------------------------------------------------------------

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.root.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.root.clientHeight * ratio));
    if (width === this.canvas.width && height === this.canvas.height) return;
    this.canvas.width = width;
    this.canvas.height = height;
    this.svg.setAttribute("viewBox", `0 0 ${this.root.clientWidth} ${this.root.clientHeight}`);
    if (this.series) this.update();
    else this.draw();
  }

  /** Image pixel → CSS pixel of the viewport: {scale, x0, y0}. */
  transform() {
    const entry = this.shown?.entry;
    if (!entry) return null;
    const width = this.root.clientWidth;
    const height = this.root.clientHeight;
    const scale = Math.min(width / entry.width, height / entry.height) * this.zoom;
    return {
      scale,
      x0: (width - entry.width * scale) / 2 + this.panX,
      y0: (height - entry.height * scale) / 2 + this.panY,
    };
  }

  toImage(clientX, clientY) {
    const t = this.transform();
    if (!t) return null;
    const box = this.root.getBoundingClientRect();
    return { x: (clientX - box.left - t.x0) / t.scale, y: (clientY - box.top - t.y0) / t.scale };
  }

  draw() {
    const context = this.canvas.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const t = this.transform();
    if (this.series && t) {
      const ratio = this.canvas.width / Math.max(1, this.root.clientWidth);
      const { entry } = this.shown;
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.imageSmoothingEnabled = true;
      context.imageSmoothingQuality = "high";
      context.drawImage(entry.bitmap, t.x0, t.y0, entry.width * t.scale, entry.height * t.scale);
      this.drawLabels(context, t, entry);
    }
    this.drawText();
    this.drawAnnotations();
  }

  drawLabels(context, t, entry) {
    const layers = this.labelLayers
      .map(({ overlay, entry: labels }) => ({
        values: labels.values,
        width: labels.width,
        height: labels.height,
        colors: this.app.visibleColors(overlay.uid),
      }))
      .filter((layer) => layer.width === entry.width && layer.height === entry.height);
    const painted = paintLabels(layers, this.app.overlayOpacity);
    this.root.dataset.overlayDrawn = painted ? "1" : "0";
    if (!painted) return;
    context.imageSmoothingEnabled = false;
    context.drawImage(painted, t.x0, t.y0, entry.width * t.scale, entry.height * t.scale);
  }

  drawText() {
    const series = this.series;
    for (const node of [...Object.values(this.corners), ...Object.values(this.edges)]) {
      node.textContent = "";
    }
    if (!series) return;
    const text = series.overlay_text ?? {};
    const lines = (node, values) => {
      node.replaceChildren(
        ...values.filter(Boolean).map((value) => {
          const line = document.createElement("div");
          line.textContent = value;
          return line;
        }),
      );
    };
    lines(this.corners.tl, [personName(text.patient_name), text.patient_id, dicomDate(text.study_date)]);
    const projection = this.mode === "slice" ? "" : ` ${this.mode.toUpperCase()} ${this.slab} mm`;
    lines(this.corners.tr, [
      text.series_description ?? series.series_description,
      `Se ${series.series_number ?? "—"} · ${series.modality ?? ""}`,
      `${this.plane}${projection}`,
    ]);
    const spacing = series.volume?.valid ? series.volume.spacing?.[PLANE_AXIS[this.plane]] : null;
    lines(this.corners.bl, [
      `Im ${this.index + 1} / ${this.count}`,
      Number.isFinite(spacing) ? `${(this.index * spacing).toFixed(1)} mm` : "",
    ]);
    this.corners.bl.dataset.slice = `${this.index + 1}/${this.count}`;
    lines(this.corners.br, [
      `W ${this.ww} L ${this.wc}${this.invert ? " inv" : ""}`,
      `Zoom ${Math.round(this.zoom * 100)}%`,
    ]);
    const labels = series.volume?.orientation_labels?.[this.plane];
    if (labels) for (const edge of Object.keys(this.edges)) this.edges[edge].textContent = labels[edge] ?? "";
  }

  // --- annotations --------------------------------------------------------------------------

  measurementKey() {
    return `${this.series?.series_instance_uid}|${this.plane}|${this.mode}|${this.shown?.index}`;
  }

  drawAnnotations() {
    this.svg.replaceChildren();
    const t = this.transform();
    if (!t || !this.series) return;
    const key = this.measurementKey();
    const at = (p) => [t.x0 + p.x * t.scale, t.y0 + p.y * t.scale];
    const visible = this.measurements.filter((m) => m.key === key);
    if (this.draft) visible.push(this.draft);
    for (const m of visible) this.drawMeasurement(m, at);
    if (this.crosshair && this.shown) this.drawCrosshair(at);
  }

  svgNode(tag, attributes, parent = this.svg) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    parent.append(node);
    return node;
  }

  drawMeasurement(m, at) {
    const [ax, ay] = at(m.a);
    const [bx, by] = at(m.b);
    const group = this.svgNode("g", { class: `vx-measure ${m.kind}` });
    if (m.kind === "length") {
      this.svgNode("line", { x1: ax, y1: ay, x2: bx, y2: by }, group);
    } else if (m.kind === "rect") {
      this.svgNode("rect", {
        x: Math.min(ax, bx), y: Math.min(ay, by),
        width: Math.abs(bx - ax), height: Math.abs(by - ay),
      }, group);
    } else {
      this.svgNode("ellipse", {
        cx: (ax + bx) / 2, cy: (ay + by) / 2, rx: Math.abs(bx - ax) / 2, ry: Math.abs(by - ay) / 2,
      }, group);
    }
    if (!m.text) return;
    const label = this.svgNode("text", {
      class: "vx-measure-label", x: Math.max(ax, bx) + 6, y: Math.max(ay, by) + 4,
    }, group);
    label.textContent = m.text;
    for (const [name, value] of Object.entries(m.data ?? {})) label.dataset[name] = String(value);
  }

  drawCrosshair(at) {
    const { entry } = this.shown;
    const [x, y] = at({ x: this.crosshair.fx * entry.width, y: this.crosshair.fy * entry.height });
    const width = this.root.clientWidth;
    const height = this.root.clientHeight;
    const group = this.svgNode("g", { class: "vx-crosshair" });
    this.svgNode("line", { x1: 0, y1: y, x2: width, y2: y }, group);
    this.svgNode("line", { x1: x, y1: 0, x2: x, y2: height }, group);
  }

  /** Finish a length: its size in mm from the pixel spacing the server reported. */
  finishLength(m) {
    const spacing = this.shown?.entry.pixelSpacing;
    const pixels = Math.hypot(m.b.x - m.a.x, m.b.y - m.a.y);
    if (spacing) {
      const mm = pixels * spacing;
      m.text = `${mm.toFixed(1)} mm`;
      m.data = { lengthMm: mm.toFixed(2) };
    } else {
      m.text = `${pixels.toFixed(0)} px`;
      m.data = { lengthPx: pixels.toFixed(1) };
    }
  }

  /** Finish a region: its statistics from the server, in the series' unit (HU for CT). */
  async finishRegion(m) {
    const size = this.outputSize();
    const url = withQuery(`${seriesPath(this.series.series_instance_uid)}/roi`, {
      plane: this.plane,
      index: this.shown.index,
      x0: Math.round(Math.min(m.a.x, m.b.x)),
      y0: Math.round(Math.min(m.a.y, m.b.y)),
      x1: Math.round(Math.max(m.a.x, m.b.x)),
      y1: Math.round(Math.max(m.a.y, m.b.y)),
      shape: m.kind,
      size,
    });
    m.text = "…";
    try {
      const stats = await this.app.json(url);
      const unit = stats.unit ? ` ${stats.unit}` : "";
      m.text = `${stats.mean.toFixed(1)} ± ${stats.std.toFixed(1)}${unit} (${stats.area_mm2.toFixed(0)} mm²)`;
      m.data = { mean: stats.mean.toFixed(2), std: stats.std.toFixed(2), n: stats.n };
    } catch (error) {
      m.text = error.message;
      m.data = { error: "1" };
    }
    this.drawAnnotations();
  }

  imageFraction(point) {
    const entry = this.shown?.entry;
    if (!entry) return null;
    return { fx: clamp(point.x / entry.width, 0, 1), fy: clamp(point.y / entry.height, 0, 1) };
  }
}
