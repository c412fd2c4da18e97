/*
 * The dashboard's charts (Chart.js): tasks by status, throughput, failure rate and duration
 * percentiles by task. Data comes from the dashboard's metrics URL; it is fetched again when tasks
 * change status (live stream, at most every 5 s) and every 60 s.
 */
(function () {
  "use strict";

  const REFRESH_MS = 60000;
  const LIVE_MIN_MS = 5000;
  const charts = {};
  let lastLoad = 0;
  let queued = false;

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue("--status-" + name).trim() || "#888";
  }

  function label(status) {
    return status === "marked_for_deletion" ? "in trash" : status.replace("_", " ");
  }

  function upsert(id, config) {
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update("none");
      return;
    }
    const canvas = document.getElementById(id);
    if (canvas) charts[id] = new window.Chart(canvas, config);
  }

  const common = {
    responsive: true,
    maintainAspectRatio: false,
    animation: { duration: 250 },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  };

  function statusChart(counts) {
    const statuses = Object.keys(counts).filter(function (s) { return counts[s] > 0; });
    upsert("chart-status", {
      type: "doughnut",
      data: {
        labels: statuses.map(label),
        datasets: [{ data: statuses.map(function (s) { return counts[s]; }), backgroundColor: statuses.map(color) }],
      },
      options: Object.assign({}, common, { cutout: "55%" }),
    });
  }

  function bucketLabel(iso, bucket) {
    const at = new Date(iso);
    return bucket === "hour"
      ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false })
      : at.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  function throughputChart(throughput) {
    const points = throughput.points;
    upsert("chart-throughput", {
      type: "bar",
      data: {
        labels: points.map(function (p) { return bucketLabel(p.at, throughput.bucket); }),
        datasets: [
          { label: "completed", data: points.map(function (p) { return p.completed; }), backgroundColor: color("completed") },
          { label: "failed", data: points.map(function (p) { return p.failed; }), backgroundColor: color("failed") },
        ],
      },
      options: Object.assign({}, common, {
        scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      }),
    });
  }

  function failureChart(tasks) {
    upsert("chart-failures", {
      type: "bar",
      data: {
        labels: tasks.map(function (t) { return t.task; }),
        datasets: [{
          label: "failure rate (%)",
          data: tasks.map(function (t) { return Math.round(t.failure_rate * 1000) / 10; }),
          backgroundColor: color("failed"),
        }],
      },
      options: Object.assign({}, common, {
        indexAxis: "y",
        plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true, max: 100, ticks: { callback: function (v) { return v + "%"; } } } },
      }),
    });
  }

  function durationChart(tasks) {
    const seconds = function (key) {
      return tasks.map(function (t) { return t[key] === null ? null : t[key] / 1000; });
    };
    upsert("chart-durations", {
      type: "bar",
      data: {
        labels: tasks.map(function (t) { return t.task; }),
        datasets: [
          { label: "p50", data: seconds("p50_ms"), backgroundColor: color("completed") },
          { label: "p90", data: seconds("p90_ms"), backgroundColor: color("running") },
          { label: "p99", data: seconds("p99_ms"), backgroundColor: color("waiting_approval") },
        ],
      },
      options: Object.assign({}, common, { scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } } }),
    });
  }

  function load() {
    const box = document.querySelector("[data-metrics-url]");
    if (!box || !window.Chart) return;
    lastLoad = Date.now();
    fetch(box.dataset.metricsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (data) {
        statusChart(data.counts);
        throughputChart(data.throughput);
        failureChart(data.tasks);
        durationChart(data.tasks);
        box.dataset.loaded = "true";
      })
      .catch(function () { box.dataset.loaded = "error"; });
  }

  document.addEventListener("live:message", function (event) {
    if (event.detail.message.type !== "status" || queued) return;
    queued = true;
    setTimeout(function () { queued = false; load(); }, Math.max(0, LIVE_MIN_MS - (Date.now() - lastLoad)));
  });

  document.addEventListener("DOMContentLoaded", function () {
    load();
    setInterval(load, REFRESH_MS);
  });
})();
