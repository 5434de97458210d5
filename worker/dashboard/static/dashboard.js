// signq dashboard: the few live parts, in plain JavaScript (no build step).
"use strict";

function showTimes(root) {
  for (const el of root.querySelectorAll("time[data-ms]")) {
    const ms = Number(el.dataset.ms);
    if (ms > 0) el.textContent = new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
}

function lookup(data, path) {
  return path.split("/").reduce((v, k) => (v == null ? v : v[k]), data);
}

// Overview: refresh the figures every 2 s and draw jobs by state over time.
function liveOverview(section) {
  const samples = [];
  const chart = document.getElementById("chart");
  const series = {
    pending_audit: (d) => d.jobs.pending_audit,
    approved: (d) => d.jobs.approved,
    queued: (d) => d.jobs.queued + d.jobs.parked,
    failed: (d) => d.jobs.failed,
  };
  async function tick() {
    try {
      const response = await fetch(section.dataset.live, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      for (const el of document.querySelectorAll("[data-field]")) {
        const value = lookup(data, el.dataset.field);
        if (el.tagName === "TIME") {
          el.dataset.ms = value || "";
        } else {
          el.textContent = value == null ? "-" : value;
        }
      }
      renderLists(data);
      showTimes(document);
      samples.push(data);
      if (samples.length > 120) samples.shift();
      draw();
    } catch (err) {
      /* the next tick tries again */
    }
  }
  function renderLists(data) {
    const base = document.body.dataset.base;
    for (const ul of document.querySelectorAll("[data-list]")) {
      const value = data[ul.dataset.list];
      const items = Array.isArray(value) ? value : Object.entries(value || {});
      ul.replaceChildren(...items.map((item) => {
        const li = document.createElement("li");
        const kind = ul.dataset.template;
        if (kind === "account") {
          const a = document.createElement("a");
          a.href = `${base}/accounts/${encodeURIComponent(item)}`;
          a.textContent = item;
          li.append(a);
        } else if (kind === "pairs") {
          li.textContent = `${item[0]}: ${item[1]}`;
        } else {
          const [key, rest] = kind.split(":");
          const [field, unit] = rest.split(" ");
          const label = document.createElement(key === "job_id" ? "a" : "span");
          if (key === "job_id") label.href = `${base}/jobs/${item[key]}`;
          label.textContent = String(item[key]).slice(0, 12);
          li.append(label, ` ${item[field]} ${unit}`);
        }
        return li;
      }));
      if (!items.length) ul.innerHTML = '<li class="empty">none</li>';
    }
    const finished = (d) => d.jobs.approved + d.jobs.rejected + d.jobs.deleted + d.jobs.failed;
    if (samples.length) {
      const first = samples[Math.max(0, samples.length - 30)];
      const minutes = (data.at - first.at) / 60000;
      if (minutes > 0) {
        document.getElementById("throughput").textContent = Math.round((finished(data) - finished(first)) / minutes);
      }
    }
  }
  function draw() {
    if (!chart || samples.length < 2) return;
    const max = Math.max(1, ...samples.flatMap((s) => Object.values(series).map((f) => f(s))));
    const x = (i) => (i / (samples.length - 1)) * 600;
    const y = (v) => 135 - (v / max) * 130;
    chart.innerHTML = Object.entries(series)
      .map(([name, f]) => {
        const points = samples.map((s, i) => `${x(i).toFixed(1)},${y(f(s)).toFixed(1)}`).join(" ");
        return `<polyline class="line ${name}" points="${points}"/>`;
      })
      .join("");
  }
  tick();
  setInterval(tick, 2000);
}

// Events: append each event the server sends, newest on top.
function liveEvents(table) {
  const state = document.getElementById("live-state");
  const source = new EventSource(table.dataset.stream, { withCredentials: true });
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    const row = table.tBodies[0].insertRow(0);
    row.className = "arrived";
    for (const value of [e.at, e.type, e.account, (e.job_id || "").slice(0, 12), e.sign_id || "", e.reason || e.error || ""]) {
      row.insertCell().textContent = value;
    }
    while (table.tBodies[0].rows.length > 200) table.tBodies[0].deleteRow(-1);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  const overview = document.getElementById("overview");
  if (overview) liveOverview(overview);
  const events = document.getElementById("events");
  if (events) liveEvents(events);
});
