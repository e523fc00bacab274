// hybatch dashboard: sortable tables, the month picker, and live batch progress.
// Pages work without this script; it only adds behaviour. No inline script is allowed (CSP).
"use strict";

(function () {
  const POLL_MS = 2000;
  const MAX_POLL_MS = 15000;

  function sortValue(cell, asText) {
    const raw = cell ? (cell.dataset.sortValue ?? cell.textContent.trim()) : "";
    if (asText) return raw.toLowerCase();
    const number = Number(raw);
    return Number.isNaN(number) ? -Infinity : number;
  }

  function makeSortable(table) {
    const headers = Array.from(table.tHead.rows[0].cells);
    headers.forEach((header, column) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort-button";
      button.textContent = header.textContent.trim();
      header.textContent = "";
      header.appendChild(button);
      button.addEventListener("click", () => {
        const ascending = header.getAttribute("aria-sort") !== "ascending";
        const asText = header.dataset.sortType === "text";
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const left = sortValue(a.cells[column], asText);
          const right = sortValue(b.cells[column], asText);
          if (left < right) return ascending ? -1 : 1;
          if (left > right) return ascending ? 1 : -1;
          return 0;
        });
        rows.forEach((row) => body.appendChild(row));
        headers.forEach((other) => other.removeAttribute("aria-sort"));
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      });
    });
  }

  function linkMonthPicker(form) {
    const range = form.querySelector("select[name=range]");
    const month = form.querySelector("select[name=month]");
    if (!range || !month) return;
    month.addEventListener("change", () => { range.value = "month"; });
  }

  function liveIds() {
    const ids = new Set();
    document.querySelectorAll("[data-batch-id][data-live]").forEach((el) => ids.add(el.dataset.batchId));
    return Array.from(ids);
  }

  function applyBatch(batch) {
    const containers = document.querySelectorAll(`[data-batch-id="${CSS.escape(batch.id)}"]`);
    let becameFinal = false;
    containers.forEach((container) => {
      for (const [field, text] of Object.entries(batch.text)) {
        container.querySelectorAll(`[data-field="${field}"]`).forEach((el) => {
          if (el.tagName !== "PROGRESS") el.textContent = text;
        });
      }
      container.querySelectorAll('progress[data-field="percent"]').forEach((bar) => {
        bar.value = batch.percent;
        bar.textContent = `${batch.percent}%`;
      });
      container.querySelectorAll('[data-field="status"]').forEach((badge) => {
        badge.className = `badge status-${batch.status}`;
      });
      if (!batch.is_live && container.hasAttribute("data-live")) {
        container.removeAttribute("data-live");
        becameFinal = true;
      }
    });
    return becameFinal && document.querySelector("[data-live-single]") !== null;
  }

  function startLiveProgress() {
    const note = document.querySelector("[data-live-status]");
    let delay = POLL_MS;
    async function poll() {
      const ids = liveIds();
      if (ids.length === 0) return;
      try {
        const response = await fetch(`/dashboard/batches/progress.json?ids=${encodeURIComponent(ids.join(","))}`, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        if (response.status === 401) {
          window.location.assign(`/dashboard/login?next=${encodeURIComponent(window.location.pathname)}`);
          return;
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        let reload = false;
        body.batches.forEach((batch) => { reload = applyBatch(batch) || reload; });
        if (reload) {
          window.location.reload(); // the finished batch's page now has its files
          return;
        }
        if (note) note.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
        delay = POLL_MS;
      } catch (error) {
        delay = Math.min(delay * 2, MAX_POLL_MS);
        if (note) note.textContent = "Live updates paused: the server did not answer. Retrying…";
      }
      window.setTimeout(poll, delay);
    }
    if (liveIds().length > 0) window.setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("table[data-sortable]").forEach(makeSortable);
    document.querySelectorAll("form.range-form").forEach(linkMonthPicker);
    startLiveProgress();
  });
})();
