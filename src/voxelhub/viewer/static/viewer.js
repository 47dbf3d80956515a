// The study viewer: series list, layouts of viewports, tools, volumes, MPR and SEG overlays.

import { getJson, seriesPath } from "./api.js";
import { ImageCache } from "./cache.js";
import { attachInput, attachKeys } from "./interact.js";
import { dicomDate, personName } from "./format.js";
import { PatientGrid } from "./patient.js";
import { Viewport } from "./viewport.js";

const LAYOUTS = { 1: 1, 2: 2, 4: 4, mpr: 3 };
const MPR_PLANES = ["axial", "coronal", "sagittal"];
const POLL_MS = 400;
const DRAG_TYPE = "application/x-voxelhub-series";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const byId = (id) => document.getElementById(id);

class ViewerApp {
  constructor(root) {
    this.root = root;
    this.studyUid = root.dataset.studyUid;
    this.csrf = root.dataset.csrf;
    this.images = new ImageCache(256 * 1024 * 1024);
    this.labels = new ImageCache(64 * 1024 * 1024);
    this.tool = "scroll";
    this.layout = "1";
    this.volumes = new Map();
    this.grids = new Map();
    this.overlays = new Map();
    this.overlayOpacity = 0.5;
    this.link = true; // views of one frame of reference follow each other
    this.cine = null;
    this.grid = byId("viewports");
    this.toolbar = root.querySelector(".vx-toolbar");
    this.viewports = [0, 1, 2, 3].map((id) => {
      const viewport = new Viewport(this, id);
      attachInput(this, viewport);
      this.acceptDrops(viewport);
      return viewport;
    });
    this.active = this.viewports[0];
    this.presets = [...this.toolbar.querySelectorAll("[data-preset]")].map((button, i) => ({
      key: String(i + 1), width: Number(button.dataset.ww), center: Number(button.dataset.wc),
    }));
  }

  async start() {
    this.wireToolbar();
    attachKeys(this);
    this.setLayout("1");
    try {
      const document_ = await this.json(`/viewer/api/studies/${encodeURIComponent(this.studyUid)}`);
      this.study = document_.study;
      this.series = document_.series;
    } catch (error) {
      byId("study-title").textContent = "Study not available";
      this.reportError(error);
      return;
    }
    this.showStudy();
    const first = this.imageSeries().sort((a, b) => b.number_of_instances - a.number_of_instances)[0];
    if (first) this.show(this.viewports[0], first);
    this.root.dataset.ready = "1";
  }

  json(url, options = {}) {
    return getJson(url, { ...options, csrf: this.csrf });
  }

  reportError(error) {
    const alert = byId("viewer-error");
    alert.textContent = error.message;
    alert.hidden = false;
  }

  imageSeries() {
    return this.series.filter((series) => series.kind === "image");
  }

  seriesByUid(uid) {
    return this.series.find((series) => series.series_instance_uid === uid);
  }

  // --- the study and its series -------------------------------------------------------------

  showStudy() {
    const study = this.study;
    byId("study-title").textContent = personName(study.patient_name);
    byId("study-subtitle").textContent = [
      study.patient_id, dicomDate(study.study_date), study.study_description,
      (study.modalities ?? []).join(", "), study.archive_name,
    ].filter(Boolean).join(" · ");
    const list = byId("series-list");
    list.replaceChildren(...this.series.map((series) => this.seriesItem(series)));
    this.buildSegPanel();
  }

  seriesItem(series) {
    const item = document.createElement("li");
    item.dataset.seriesUid = series.series_instance_uid;
    item.dataset.kind = series.kind;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "vx-seriesbutton";
    button.draggable = series.kind === "image";
    button.disabled = series.kind === "other";
    const thumb = document.createElement("img");
    thumb.alt = "";
    thumb.width = 64;
    thumb.height = 64;
    thumb.loading = "lazy";
    // A series without a picture (a segmentation, a report) keeps an empty square.
    thumb.addEventListener("error", () => thumb.classList.add("vx-nothumb"));
    if (series.thumbnail_url) thumb.src = series.thumbnail_url;
    else thumb.classList.add("vx-nothumb");
    const text = document.createElement("span");
    const number = series.series_number ?? "—";
    text.textContent = `${series.modality} ${number} · ${series.series_description || "(no description)"}`;
    const count = document.createElement("span");
    count.className = "muted small";
    count.textContent = series.kind === "seg"
      ? `segmentation · ${(series.segments ?? []).length} segments`
      : `${series.number_of_instances} images`;
    text.append(document.createElement("br"), count);
    button.append(thumb, text);
    button.addEventListener("click", () => this.pick(series));
    button.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData(DRAG_TYPE, series.series_instance_uid);
      event.dataTransfer.setData("text/plain", series.series_instance_uid);
      event.dataTransfer.effectAllowed = "copy";
    });
    item.append(button);
    return item;
  }

  /** A click in the series list: images go to the active viewport, SEGs are overlaid. */
  pick(series) {
    if (series.kind === "image") {
      this.show(this.active, series);
      return;
    }
    if (series.kind !== "seg") return;
    const source = this.seriesByUid(series.referenced_series_uid);
    if (source && this.active.series !== source) this.show(this.active, source);
    this.setOverlay(series.series_instance_uid, true);
  }

  acceptDrops(viewport) {
    const root = viewport.root;
    root.addEventListener("dragover", (event) => {
      if (!event.dataTransfer.types.includes(DRAG_TYPE)) return;
      event.preventDefault();
      root.classList.add("vx-drop");
    });
    root.addEventListener("dragleave", () => root.classList.remove("vx-drop"));
    root.addEventListener("drop", (event) => {
      root.classList.remove("vx-drop");
      const series = this.seriesByUid(event.dataTransfer.getData(DRAG_TYPE));
      if (!series) return;
      event.preventDefault();
      this.activate(viewport);
      this.show(viewport, series);
    });
  }

  show(viewport, series, plane = "axial") {
    viewport.setSeries(series, plane);
    this.activate(viewport);
    this.ensureVolume(series);
    this.markShownSeries();
    this.syncToolbar();
  }

  markShownSeries() {
    const shown = new Set(this.visible().map((v) => v.series?.series_instance_uid));
    for (const item of byId("series-list").children) {
      item.classList.toggle("vx-shown", shown.has(item.dataset.seriesUid));
    }
  }

  // --- layouts and the active viewport --------------------------------------------------------

  visible() {
    return this.viewports.slice(0, LAYOUTS[this.layout]);
  }

  setLayout(layout) {
    const previous = this.active;
    this.layout = layout;
    this.grid.dataset.layout = layout;
    const visible = this.visible();
    this.grid.replaceChildren(...visible.map((viewport) => viewport.root));
    this.pressed("[data-layout]", (button) => button.dataset.layout === layout);
    if (layout === "mpr" && previous.series) {
      const series = previous.series;
      MPR_PLANES.forEach((plane, i) => {
        if (visible[i] !== previous || previous.plane !== plane) visible[i].setSeries(series, plane);
        visible[i].setMode("slice", 0);
      });
      for (const viewport of visible) viewport.setWindow(previous.ww, previous.wc);
      this.activate(visible[0]);
      this.setTool("crosshair");
      this.crosshairAt(visible[0], null);
    } else {
      for (const viewport of visible) viewport.crosshair = null;
      if (!visible.includes(previous)) this.activate(visible[0]);
      this.fillEmpty(visible);
      if (this.tool === "crosshair") this.setTool("scroll");
    }
    for (const viewport of visible) viewport.draw();
    this.markShownSeries();
    this.syncToolbar();
  }

  fillEmpty(visible) {
    const images = this.series ? this.imageSeries() : [];
    let next = 0;
    for (const viewport of visible) {
      if (viewport.series || !images.length) continue;
      const used = new Set(visible.map((v) => v.series?.series_instance_uid));
      const free = images.find((s) => !used.has(s.series_instance_uid)) ?? images[next % images.length];
      next += 1;
      viewport.setSeries(free);
      this.ensureVolume(free);
    }
  }

  activate(viewport) {
    if (this.active === viewport) return;
    this.active = viewport;
    for (const other of this.viewports) other.root.classList.toggle("vx-active", other === viewport);
    this.syncToolbar();
    this.renderSegPanel();
  }

  // --- toolbar --------------------------------------------------------------------------------

  wireToolbar() {
    this.toolbar.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button || button.disabled) return;
      const data = button.dataset;
      if (data.layout) this.setLayout(data.layout);
      else if (data.tool) this.setTool(data.tool);
      else if (data.preset) this.applyWindowToGroup(Number(data.ww), Number(data.wc));
      else if (data.plane) this.active.setPlane(data.plane);
      else if (data.mode) this.setMode(data.mode);
      else if (data.action === "invert") this.toggleInvert();
      else if (data.action === "reset") this.reset();
      else if (data.action === "cine") this.toggleCine();
      else if (data.action === "link") this.toggleLink();
      this.syncToolbar();
    });
    const slab = byId("slab");
    slab.addEventListener("input", () => {
      byId("slab-value").textContent = `${slab.value} mm`;
      if (this.active.mode !== "slice") this.active.setMode(this.active.mode, Number(slab.value));
    });
    byId("fps").addEventListener("change", () => {
      if (this.cine) {
        this.toggleCine();
        this.toggleCine();
      }
    });
    byId("seg-opacity").addEventListener("input", (event) => {
      this.overlayOpacity = Number(event.target.value) / 100;
      this.redrawOverlays();
    });
  }

  pressed(selector, isOn) {
    for (const button of this.toolbar.querySelectorAll(selector)) {
      button.setAttribute("aria-pressed", isOn(button) ? "true" : "false");
    }
  }

  setTool(tool) {
    this.tool = tool;
    this.root.dataset.tool = tool;
    this.pressed("[data-tool]", (button) => button.dataset.tool === tool);
  }

  setMode(mode) {
    this.active.setMode(mode, Number(byId("slab").value));
  }

  /** The viewports a window change applies to: in MPR all three views of the series. */
  group(viewport) {
    if (this.layout !== "mpr") return [viewport];
    return this.visible().filter((v) => v.series === viewport.series);
  }

  applyWindow(viewport, width, center) {
    for (const v of this.group(viewport)) v.setWindow(width, center);
  }

  applyWindowToGroup(width, center) {
    this.applyWindow(this.active, width, center);
  }

  presetForKey(key) {
    return this.presets.find((preset) => preset.key === key);
  }

  applyPreset(preset) {
    this.applyWindowToGroup(preset.width, preset.center);
  }

  toggleInvert() {
    const invert = !this.active.invert;
    for (const v of this.group(this.active)) {
      v.invert = invert;
      v.update();
    }
    this.syncToolbar();
  }

  reset() {
    for (const v of this.group(this.active)) {
      v.resetView();
      v.update();
      v.draw();
    }
  }

  clearMeasurements() {
    this.active.measurements = [];
    this.active.drawAnnotations();
  }

  toggleCine() {
    if (this.cine) {
      clearInterval(this.cine);
      this.cine = null;
    } else {
      const fps = Math.min(60, Math.max(1, Number(byId("fps").value) || 10));
      this.cine = setInterval(() => {
        const viewport = this.active;
        // Advance only once the previous frame is on screen: cine never builds a backlog.
        if (viewport.series && viewport.shown?.index === viewport.index) viewport.step(1, { wrap: true });
      }, 1000 / fps);
    }
    this.pressed("[data-action=cine]", () => Boolean(this.cine));
    this.toolbar.querySelector("[data-action=cine]").textContent = this.cine ? "Pause" : "Play";
  }

  syncToolbar() {
    const viewport = this.active;
    const series = viewport?.series;
    const ready = Boolean(series && this.volumeReady(series));
    for (const button of this.toolbar.querySelectorAll("[data-plane]")) {
      button.disabled = button.dataset.plane !== "axial" && !ready;
      button.setAttribute("aria-pressed", String(series ? viewport.plane === button.dataset.plane : false));
    }
    for (const button of this.toolbar.querySelectorAll("[data-mode]")) {
      button.disabled = button.dataset.mode !== "slice" && !ready;
      button.setAttribute("aria-pressed", String(series ? viewport.mode === button.dataset.mode : false));
    }
    this.toolbar.querySelector("[data-layout=mpr]").disabled = !ready;
    byId("slab").disabled = !ready;
    this.pressed("[data-action=invert]", () => Boolean(viewport?.invert));
    this.showVolumeStatus();
    // Say on the disabled buttons themselves why they are disabled.
    const why = ready || !series ? "" : byId("volume-status").textContent;
    for (const control of this.toolbar.querySelectorAll("[data-needs-volume]")) {
      control.title = why || control.dataset.title || "";
    }
  }

  // --- volumes ----------------------------------------------------------------------------------

  volumeReady(series) {
    return series.volume?.valid && this.volumes.get(series.series_instance_uid)?.state === "ready";
  }

  /** Start loading the series' volume on the server (axial slices work meanwhile). */
  async ensureVolume(series) {
    const uid = series.series_instance_uid;
    if (this.volumes.has(uid)) return;
    if (!series.volume?.valid) {
      this.volumes.set(uid, { state: "invalid", message: series.volume?.reason });
      this.syncToolbar();
      return;
    }
    this.volumes.set(uid, { state: "loading", loaded: 0, total: series.number_of_instances });
    this.syncToolbar();
    try {
      const load = () => this.json(`${seriesPath(uid)}/load`, { method: "POST" });
      let status = await load();
      while (status.state === "loading" || status.state === "absent") {
        this.volumes.set(uid, status);
        this.showVolumeStatus();
        await sleep(POLL_MS);
        status = await this.json(`${seriesPath(uid)}/status`);
        // Evicted from the server's cache meanwhile (memory pressure): ask again.
        if (status.state === "absent") status = await load();
      }
      this.volumes.set(uid, status);
    } catch (error) {
      this.volumes.set(uid, { state: "error", message: error.message });
    }
    this.syncToolbar();
  }

  showVolumeStatus() {
    const node = byId("volume-status");
    const series = this.active?.series;
    if (!series) {
      node.textContent = "";
      return;
    }
    const status = this.volumes.get(series.series_instance_uid) ?? { state: "absent" };
    node.dataset.state = status.state;
    const dims = series.volume?.dims;
    const messages = {
      invalid: `Slice by slice only: ${status.message ?? "this series does not form a volume"}`,
      error: `The volume could not be loaded: ${status.message ?? "unknown error"}`,
      ready: `Volume ready${dims ? ` (${dims.join(" × ")})` : ""}: MPR and projections available`,
      loading: `Loading the volume ${status.loaded ?? 0} / ${status.total ?? "?"}… axial slices work meanwhile`,
      absent: "Loading the volume…",
    };
    node.textContent = messages[status.state] ?? "";
  }

  // --- linked cross-hairs -----------------------------------------------------------------------

  /** Where the images of `series` lie in the patient; null for a series that is no volume. */
  patientGrid(series) {
    const uid = series.series_instance_uid;
    if (!this.grids.has(uid)) {
      this.grids.set(uid, series.volume?.grid ? new PatientGrid(series.volume) : null);
    }
    return this.grids.get(uid);
  }

  /**
   * Move the linked views to the point of the patient under `point` (image pixels of
   * `viewport`; null: the middle of its image), each to its image nearest that point.
   */
  crosshairAt(viewport, point) {
    const grid = viewport.series && this.patientGrid(viewport.series);
    const f = point ? viewport.imageFraction(point) : { fx: 0.5, fy: 0.5 };
    if (!grid || !f) return;
    const target = grid.toPatient(viewport.plane, viewport.index, f);
    for (const other of this.linkedViews(viewport)) {
      const { index, fx, fy } = this.patientGrid(other.series).locate(other.plane, target);
      other.crosshair = { fx, fy };
      if (other !== viewport) other.setIndex(index);
      other.drawAnnotations();
    }
  }

  /**
   * After the user scrolled `viewport`: the views of other series of its frame of reference
   * move to their image nearest its cross-hair (or the middle of its image).
   */
  followScroll(viewport) {
    const grid = this.link && viewport.series && this.patientGrid(viewport.series);
    if (!grid) return;
    const target = grid.toPatient(viewport.plane, viewport.index, viewport.crosshair ?? { fx: 0.5, fy: 0.5 });
    for (const other of this.linkedViews(viewport)) {
      if (other.series === viewport.series) continue;
      const { index, fx, fy } = this.patientGrid(other.series).locate(other.plane, target);
      if (other.crosshair) other.crosshair = { fx, fy };
      other.setIndex(index);
      other.drawAnnotations();
    }
  }

  /**
   * The visible views that follow `viewport`: those of its series, and with linking on
   * those of every series in its frame of reference (they share patient coordinates).
   */
  linkedViews(viewport) {
    const series = viewport.series;
    const frame = series?.frame_of_reference_uid;
    return this.visible().filter((other) => {
      if (!other.series) return false;
      if (other.series === series) return true;
      return Boolean(this.link && frame && other.series.frame_of_reference_uid === frame
        && this.patientGrid(other.series));
    });
  }

  toggleLink() {
    this.link = !this.link;
    if (!this.link) {
      for (const viewport of this.visible()) {
        if (viewport.series !== this.active.series && viewport.crosshair) {
          viewport.crosshair = null;
          viewport.drawAnnotations();
        }
      }
    }
    this.pressed("[data-action=link]", () => this.link);
  }

  // --- segmentation overlays ----------------------------------------------------------------

  segSeries() {
    return (this.series ?? []).filter((series) => series.kind === "seg");
  }

  buildSegPanel() {
    for (const seg of this.segSeries()) {
      const segments = new Map((seg.segments ?? []).map((s) => [s.number, { ...s, visible: true }]));
      this.overlays.set(seg.series_instance_uid, { uid: seg.series_instance_uid, seg, enabled: false, segments });
    }
    this.renderSegPanel();
  }

  renderSegPanel() {
    const panel = byId("seg-panel");
    const list = byId("seg-list");
    if (!panel || !this.series) return;
    const overlays = [...this.overlays.values()];
    panel.hidden = overlays.length === 0;
    list.replaceChildren(...overlays.map((overlay) => this.segFieldset(overlay)));
  }

  segFieldset(overlay) {
    const fieldset = document.createElement("fieldset");
    fieldset.className = "vx-seg";
    fieldset.dataset.segUid = overlay.uid;
    const legend = document.createElement("legend");
    const show = document.createElement("input");
    show.type = "checkbox";
    show.checked = overlay.enabled;
    show.dataset.segToggle = overlay.uid;
    show.addEventListener("change", () => this.setOverlay(overlay.uid, show.checked));
    const label = document.createElement("label");
    label.append(show, ` ${overlay.seg.series_description || "Segmentation"}`);
    legend.append(label);
    fieldset.append(legend);
    for (const segment of overlay.segments.values()) {
      const row = document.createElement("label");
      row.className = "vx-segment";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = segment.visible;
      box.dataset.segment = String(segment.number);
      box.addEventListener("change", () => {
        segment.visible = box.checked;
        this.redrawOverlays();
      });
      const swatch = document.createElement("span");
      swatch.className = "vx-swatch";
      swatch.style.backgroundColor = `rgb(${segment.color.join(",")})`;
      row.append(box, swatch, ` ${segment.number} ${segment.label}`);
      fieldset.append(row);
    }
    return fieldset;
  }

  setOverlay(uid, enabled) {
    const overlay = this.overlays.get(uid);
    if (!overlay) return;
    overlay.enabled = enabled;
    const box = document.querySelector(`[data-seg-toggle="${CSS.escape(uid)}"]`);
    if (box) box.checked = enabled;
    for (const viewport of this.visible()) {
      if (viewport.series?.series_instance_uid === overlay.seg.referenced_series_uid) viewport.loadLabels();
    }
    this.redrawOverlays();
  }

  /** The overlays switched on over `series`. */
  overlaysFor(series) {
    if (!series) return [];
    return [...this.overlays.values()].filter(
      (overlay) => overlay.enabled && overlay.seg.referenced_series_uid === series.series_instance_uid,
    );
  }

  /** Segment number → colour for the visible segments of one overlay. */
  visibleColors(uid) {
    const overlay = this.overlays.get(uid);
    const colors = new Map();
    if (!overlay?.enabled) return colors;
    for (const segment of overlay.segments.values()) {
      if (segment.visible) colors.set(segment.number, segment.color);
    }
    return colors;
  }

  redrawOverlays() {
    for (const viewport of this.visible()) viewport.draw();
  }
}

const root = byId("viewer");
if (root) {
  new ViewerApp(root).start();
}
