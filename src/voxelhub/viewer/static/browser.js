// The study browser: search the studies you may see, show a study's series, open the viewer.

import { getJson, withQuery } from "./api.js";
import { dicomDate, personName, toDicomDate } from "./format.js";

const PAGE = 25;
const byId = (id) => document.getElementById(id);

function cell(row, ...content) {
  const td = document.createElement("td");
  td.append(...content);
  row.append(td);
  return td;
}

function lines(...values) {
  return values.filter((value) => value !== null && value !== undefined && value !== "").map((value, i) => {
    const div = document.createElement("div");
    if (i > 0) div.className = "muted small";
    div.textContent = value;
    return div;
  });
}

class StudyBrowser {
  constructor() {
    this.form = byId("study-search");
    this.table = byId("study-table");
    this.count = byId("study-count");
    this.error = byId("browser-error");
    this.pager = byId("study-pager");
    this.offset = 0;
    this.controller = null;
  }

  async start() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.offset = 0;
      this.search();
    });
    this.pager.addEventListener("click", (event) => {
      const button = event.target.closest("[data-page]");
      if (!button) return;
      this.offset = Math.max(0, this.offset + (button.dataset.page === "next" ? PAGE : -PAGE));
      this.search();
    });
    this.loadArchives();
    await this.search();
  }

  async loadArchives() {
    try {
      const archives = await getJson("/api/v1/archives");
      const select = this.form.elements.namedItem("archive");
      for (const archive of archives) select.append(new Option(archive.name, archive.id));
    } catch (error) {
      this.showError(error);
    }
  }

  showError(error) {
    this.error.textContent = error.message;
    this.error.hidden = !error.message;
  }

  query() {
    const data = new FormData(this.form);
    return {
      patient: String(data.get("patient") ?? "").trim(),
      date_from: toDicomDate(String(data.get("date_from") ?? "")),
      date_to: toDicomDate(String(data.get("date_to") ?? "")),
      modality: String(data.get("modality") ?? "").trim().toUpperCase(),
      archive: String(data.get("archive") ?? ""),
      limit: PAGE,
      offset: this.offset,
    };
  }

  async search() {
    this.controller?.abort();
    this.controller = new AbortController();
    this.count.textContent = "Searching…";
    delete this.count.dataset.total; // set again when this search's answer is shown
    let result;
    try {
      result = await getJson(withQuery("/viewer/api/studies", this.query()), {
        signal: this.controller.signal,
      });
    } catch (error) {
      if (error.name === "AbortError") return;
      this.count.textContent = "";
      this.showError(error);
      return;
    }
    this.showError({ message: "" });
    this.showStudies(result);
  }

  showStudies({ studies, total }) {
    const body = this.table.tBodies[0];
    body.replaceChildren(...studies.map((study) => this.studyRow(study)));
    this.table.hidden = studies.length === 0;
    this.count.dataset.total = String(total);
    this.count.textContent = total === 0
      ? "No studies match. Change the search, or send studies to an archive with STOW-RS."
      : `${this.offset + 1}–${this.offset + studies.length} of ${total} studies`;
    this.pager.hidden = total <= PAGE;
    this.pager.querySelector("[data-page=prev]").disabled = this.offset === 0;
    this.pager.querySelector("[data-page=next]").disabled = this.offset + PAGE >= total;
    this.pager.querySelector("[data-page-label]").textContent =
      `Page ${Math.floor(this.offset / PAGE) + 1} of ${Math.ceil(total / PAGE)}`;
  }

  studyRow(study) {
    const row = document.createElement("tr");
    row.dataset.studyUid = study.study_instance_uid;
    cell(row, ...lines(personName(study.patient_name), study.patient_id));
    cell(row, dicomDate(study.study_date)).className = "nowrap";
    const modalities = (study.modalities ?? []).join(", ");
    cell(row, ...lines(study.study_description || "—",
      `${modalities} · ${study.number_of_series} series · ${study.number_of_instances} images`));
    cell(row, study.archive_name ?? "");
    const open = document.createElement("a");
    open.className = "button primary";
    open.href = `/viewer/studies/${encodeURIComponent(study.study_instance_uid)}`;
    open.textContent = "Open";
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "button subtle";
    toggle.textContent = "Series";
    toggle.setAttribute("aria-expanded", "false");
    toggle.addEventListener("click", () => this.toggleSeries(row, study, toggle));
    cell(row, open, " ", toggle).className = "actions";
    return row;
  }

  async toggleSeries(row, study, toggle) {
    const next = row.nextElementSibling;
    if (next?.classList.contains("vx-seriesrow")) {
      next.remove();
      toggle.setAttribute("aria-expanded", "false");
      return;
    }
    toggle.setAttribute("aria-expanded", "true");
    const holder = document.createElement("tr");
    holder.className = "vx-seriesrow";
    const td = document.createElement("td");
    td.colSpan = 5;
    td.textContent = "Loading series…";
    holder.append(td);
    row.after(holder);
    try {
      const detail = await getJson(`/viewer/api/studies/${encodeURIComponent(study.study_instance_uid)}`);
      td.replaceChildren(this.seriesList(study, detail.series));
    } catch (error) {
      td.textContent = error.message;
    }
  }

  seriesList(study, seriesList) {
    const list = document.createElement("ul");
    list.className = "series vx-thumbs";
    for (const series of seriesList) {
      const item = document.createElement("li");
      item.dataset.seriesUid = series.series_instance_uid;
      const link = document.createElement("a");
      link.href = `/viewer/studies/${encodeURIComponent(study.study_instance_uid)}`;
      const image = document.createElement("img");
      image.className = "thumb";
      image.width = 64;
      image.height = 64;
      image.loading = "lazy";
      image.alt = `Series ${series.series_number ?? ""} thumbnail`;
      image.addEventListener("error", () => image.classList.add("vx-nothumb"));
      if (series.thumbnail_url) image.src = series.thumbnail_url;
      else image.classList.add("vx-nothumb");
      const label = document.createElement("span");
      label.className = "muted";
      label.textContent =
        `${series.modality} ${series.series_number ?? ""} · ${series.series_description || series.kind} · ${series.number_of_instances}`;
      link.append(image, label);
      item.append(link);
      list.append(item);
    }
    return list;
  }
}

if (byId("study-browser")) new StudyBrowser().start();
