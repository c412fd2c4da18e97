/*
 * The timeline of a task page (DESIGN.md §4): a Gantt chart of the workflow's members, drawn with
 * Chart.js as horizontal floating bars, zoomed and panned with chartjs-plugin-zoom.
 *
 * <section data-timeline data-timeline-url="/tasks/12/timeline.json"> loads services/timeline.py's
 * rows: each member's queued, running and paused spans (coloured by outcome), with the critical
 * path outlined and starred. Live `status` messages fetch it again, at most every 2 s.
 */
(function () {
  "use strict";

  const REFRESH_MS = 2000;
  const ROW_PX = 24;
  const PHASE_ALPHA = { queued: 0.45, running: 1, paused: 0.55, waiting_approval: 0.55, interrupted: 0.7 };
  const RUN_TO_STATUS = { lost: "interrupted" };

  function color(status, alpha) {
    const value = getComputedStyle(document.documentElement).getPropertyValue("--status-" + status).trim() || "#8a94a6";
    if (alpha === undefined || alpha >= 1) return value;
    const hex = value.replace("#", "");
    const rgb = [0, 2, 4].map(function (i) { return parseInt(hex.slice(i, i + 2), 16); });
    return "rgba(" + rgb.join(",") + "," + alpha + ")";
  }

  function spanColor(span) {
    const status = RUN_TO_STATUS[span.status] || span.status;
    return color(status, PHASE_ALPHA[span.phase] !== undefined ? PHASE_ALPHA[span.phase] : 1);
  }

  function duration(seconds) {
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds % 60);
    return m < 60 ? m + " min " + s + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  // m:ss, with tenths when the ticks are closer than a second.
  function clock(seconds, step) {
    const tenths = Math.round(seconds * 10);
    const m = Math.floor(tenths / 600);
    const s = (tenths - m * 600) / 10;
    return m + ":" + (step < 1 ? s.toFixed(1).padStart(4, "0") : String(Math.floor(s)).padStart(2, "0"));
  }

  function rowLabel(row) {
    return (row.critical ? "★ " : "") + "  ".repeat(Math.max(0, row.depth)) + row.label;
  }

  function origin(rows, now) {
    let first = now;
    rows.forEach(function (row) { row.spans.forEach(function (span) { first = Math.min(first, span.start); }); });
    return first;
  }

  // Rows are keyed by position ("0", "1", …): members often share a title, and a category axis
  // merges equal labels. The ticks show the titles.
  function toData(payload) {
    const zero = origin(payload.rows, payload.now);
    const keys = payload.rows.map(function (row, i) { return String(i); });
    const points = [];
    payload.rows.forEach(function (row, i) {
      row.spans.forEach(function (span) {
        const start = (span.start - zero) / 1000;
        points.push({ x: [start, Math.max((span.end - zero) / 1000, start + 0.05)], y: keys[i], span: span, row: row });
      });
    });
    return { labels: keys, titles: payload.rows.map(rowLabel), points: points };
  }

  function config(data) {
    return {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [{
          label: "spans", data: data.points, borderSkipped: false, barPercentage: 0.9, categoryPercentage: 0.9,
          backgroundColor: function (ctx) { return ctx.raw ? spanColor(ctx.raw.span) : "#ccc"; },
          borderColor: function (ctx) { return ctx.raw && ctx.raw.row.critical && ctx.raw.span.phase === "running" ? "#111827" : "rgba(0,0,0,0)"; },
          borderWidth: function (ctx) { return ctx.raw && ctx.raw.row.critical && ctx.raw.span.phase === "running" ? 2 : 0; },
        }],
      },
      options: {
        indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false,
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: "time since the first member was queued (m:ss)" },
            ticks: { callback: function (value, index, ticks) {
              return clock(value, ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) : 1);
            } } },
          y: { type: "category", ticks: { autoSkip: false, font: { size: 11 },
            callback: function (value, index) { return data.titles[index]; } } },
        },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: {
            title: function (items) { return items[0].raw.row.label; },
            label: function (item) {
              const span = item.raw.span;
              return span.phase + (span.phase === "running" && span.status !== "running" ? " → " + span.status : "") +
                ": " + duration((span.end - span.start) / 1000);
            },
          } },
          zoom: {
            limits: { x: { min: 0, max: "original", minRange: 0.5 } },
            pan: { enabled: true, mode: "x" },
            zoom: { wheel: { enabled: true }, pinch: { enabled: true }, mode: "x" },
          },
        },
      },
    };
  }

  function Timeline(section) {
    this.section = section;
    this.url = section.dataset.timelineUrl;
    this.box = section.querySelector("[data-timeline-box]");
    this.status = section.querySelector("[data-timeline-status]");
    this.chart = null;
    this.timer = null;
    this.again = false;
    const self = this;
    section.addEventListener("click", function (event) {
      const zoom = event.target.closest("[data-timeline-zoom]");
      if (zoom && self.chart) self.chart.zoom(parseFloat(zoom.dataset.timelineZoom));
      if (event.target.closest("[data-timeline-reset]") && self.chart) self.chart.resetZoom();
    });
    document.addEventListener("live:message", function (event) {
      const type = event.detail.message.type;
      if (event.detail.stream === "task" && (type === "status" || type === "snapshot")) self.schedule();
    });
  }

  Timeline.prototype.load = function () {
    const self = this;
    return fetch(this.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("the timeline could not be loaded (" + response.status + ")");
        return response.json();
      })
      .then(function (payload) { self.draw(payload); })
      .catch(function (error) { self.status.textContent = error.message; });
  };

  Timeline.prototype.draw = function (payload) {
    const data = toData(payload);
    this.box.style.height = Math.max(140, data.labels.length * ROW_PX + 70) + "px";
    if (this.chart) {
      this.chart.options.scales.y.ticks.callback = function (value, index) { return data.titles[index]; };
      this.chart.data.labels = data.labels;
      this.chart.data.datasets[0].data = data.points;
      this.chart.update("none");
    } else {
      this.chart = new window.Chart(this.section.querySelector("[data-timeline-canvas]"), config(data));
    }
    const critical = payload.rows.filter(function (r) { return r.critical; }).length;
    this.status.textContent = payload.rows.length + (payload.rows.length === 1 ? " row" : " rows") + (payload.truncated ? " (the first ones only)" : "") +
      (critical ? "; ★ marks the critical path (" + critical + " nodes)" : "") +
      ". Scroll to zoom, drag to pan.";
    this.section.dataset.timelineReady = "true";
  };

  // Leading and trailing throttle: one fetch now, then at most one per interval.
  Timeline.prototype.schedule = function () {
    const self = this;
    if (this.timer) {
      this.again = true;
      return;
    }
    this.load();
    this.timer = setTimeout(function tick() {
      if (self.again) {
        self.again = false;
        self.load();
        self.timer = setTimeout(tick, REFRESH_MS);
      } else {
        self.timer = null;
      }
    }, REFRESH_MS);
  };

  function start() {
    const section = document.querySelector("[data-timeline]");
    if (!section || !window.Chart) return;
    window.timelineView = new Timeline(section);
    window.timelineView.load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
