/*
 * The graph view of a task page (DESIGN.md §4): Cytoscape.js with the dagre layered layout.
 *
 * <section data-graph data-graph-url="/tasks/12/graph.json" data-node-url="/tasks/12/graph/node/0/">
 * loads the graph's JSON (services/graph_view.py), draws members inside their containers, flow
 * edges, callback edges (dashed) and conditional edges (labelled; green when taken, grey and dashed
 * when not), and colours nodes by status. A large container is one node whose ring shows its
 * members by status; it expands a page at a time from the side panel, which opens when a node is
 * clicked. Live `status` messages recolour known nodes at once, in batches; then the JSON is
 * fetched again (throttled) for counts of collapsed nodes and edge states, and the layout is
 * redone only when nodes came or went.
 */
(function () {
  "use strict";

  const STATUSES = ["pending", "queued", "running", "paused", "waiting_approval", "completed", "failed",
    "interrupted", "skipped"];
  const BATCH_MS = 150;
  const REFETCH_MS = 1500;
  const READABLE_ZOOM = 0.5; // below it labels cannot be read: show the start of the graph instead
  const MAX_FIT_ZOOM = 1.25;

  function cssColor(name, fallback) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  }

  function statusColor(status) {
    return cssColor("--status-" + status, "#8a94a6");
  }

  // Elements ---------------------------------------------------------------------------------------

  // A graph node's name above its task; a collapsed container's counts; an open large one's page.
  function displayLabel(node) {
    const name = node.key && node.key !== node.title ? node.key + "\n" + node.title : node.label;
    if (node.container && !node.open && node.total) {
      const done = (node.counts.completed || 0) + (node.counts.failed || 0) + (node.counts.skipped || 0);
      return name + "\n" + node.total.toLocaleString() + " members · " + done.toLocaleString() + " done";
    }
    if (node.open && node.pages) return node.label + " — page " + node.page + " of " + node.pages;
    return name;
  }

  function nodeData(node) {
    const data = {
      id: node.id, task_id: node.task_id, label: node.label, display: displayLabel(node), kind: node.kind,
      status: node.status, progress: node.progress, counts: node.counts, total: node.total, open: node.open,
      container: node.container, pages: node.pages || 0, page: node.page || 0, duration_ms: node.duration_ms,
    };
    if (node.parent) data.parent = node.parent;
    STATUSES.forEach(function (s) {
      data["pie_" + s] = node.total ? (100 * (node.counts[s] || 0)) / node.total : 0;
    });
    return data;
  }

  function nodeClasses(node) {
    const classes = ["status-" + node.status, "kind-" + node.kind];
    if (node.container && !node.open) classes.push("collapsed");
    if (node.callback_on) classes.push("callback-node");
    return classes.join(" ");
  }

  function edgeClasses(edge) {
    return ["edge-" + edge.kind, edge.state ? "edge-" + edge.state : ""].join(" ").trim();
  }

  function elements(view) {
    const nodes = view.nodes.map(function (n) { return { group: "nodes", data: nodeData(n), classes: nodeClasses(n) }; });
    const edges = view.edges.map(function (e) {
      return {
        group: "edges", classes: edgeClasses(e),
        data: { id: e.id, source: e.source, target: e.target, kind: e.kind, label: e.label, state: e.state },
      };
    });
    return nodes.concat(edges);
  }

  function style() {
    const pie = {};
    STATUSES.forEach(function (s, i) {
      pie["pie-" + (i + 1) + "-background-color"] = statusColor(s);
      pie["pie-" + (i + 1) + "-background-size"] = "data(pie_" + s + ")";
    });
    const rules = [
      { selector: "node", style: {
        shape: "round-rectangle", label: "data(display)", "text-wrap": "wrap", "text-max-width": 200,
        "text-valign": "center", "text-halign": "center", "font-size": 12, "font-weight": 600, color: "#fff",
        width: function (n) { return Math.min(230, Math.max(70, longestLine(n.data("display")) * 7.2 + 20)); },
        height: function (n) { return 16 + 15 * String(n.data("display")).split("\n").length; },
        "background-color": "#8a94a6", "border-width": 0,
      } },
      { selector: "node.callback-node", style: { shape: "round-tag", "border-width": 2, "border-style": "dashed", "border-color": "#7c3aed" } },
      { selector: ":parent", style: {
        shape: "round-rectangle", "background-color": "#f1f4fa", "background-opacity": 1, "border-width": 2,
        "border-style": "solid", "border-color": "data(borderColor)", "text-valign": "top", "text-halign": "center",
        "text-margin-y": -4, color: "#1d2330", padding: 14,
      } },
      { selector: "node.collapsed", style: {
        shape: "ellipse", width: 74, height: 74, "background-color": "#fff", "border-width": 3,
        "text-valign": "bottom", "text-margin-y": 6, color: "#1d2330", "pie-size": "92%", "pie-hole": "58%",
        ...pie,
      } },
      { selector: "node:selected", style: { "overlay-color": "#f5a524", "overlay-opacity": 0.35, "overlay-padding": 6 } },
      { selector: "node.collapsed:selected", style: { "overlay-shape": "ellipse" } },
      { selector: "edge", style: {
        width: 2, "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "#6b7386",
        "target-arrow-color": "#6b7386", "font-size": 10, "text-background-color": "#fff",
        "text-background-opacity": 0.9, "text-background-padding": 2, "text-rotation": "none", color: "#1d2330",
      } },
      { selector: "edge[label]", style: { label: "data(label)" } },
      { selector: "edge.edge-callback", style: { "line-style": "dashed", "line-color": "#7c3aed", "target-arrow-color": "#7c3aed", "target-arrow-shape": "vee" } },
      { selector: "edge.edge-taken", style: { "line-color": statusColor("completed"), "target-arrow-color": statusColor("completed"), width: 3.5, color: statusColor("completed") } },
      { selector: "edge.edge-skipped", style: { "line-color": "#b4bac6", "target-arrow-color": "#b4bac6", "line-style": "dashed", color: "#8a94a6" } },
      { selector: "edge.ghost", style: { opacity: 0, events: "no", label: "" } },
    ];
    STATUSES.forEach(function (s) {
      rules.splice(1, 0, { selector: "node.status-" + s, style: { "background-color": statusColor(s), "border-color": statusColor(s) } });
    });
    rules.push({ selector: "node.status-pending, node.status-skipped", style: { color: "#1d2330" } });
    rules.push({ selector: "node.status-skipped", style: { "background-color": "#e3e6ec", "border-width": 2, "border-style": "dashed", "border-color": statusColor("skipped") } });
    rules.push({ selector: "node.status-pending", style: { "background-color": "#e9ecf2", "border-width": 2, "border-color": statusColor("pending") } });
    rules.push({ selector: ":parent", style: { "background-color": "#f4f6fa", color: "#1d2330" } });
    rules.push({ selector: "node.collapsed", style: { "background-color": "#fff", color: "#1d2330" } });
    return rules;
  }

  function longestLine(text) {
    return String(text || "").split("\n").reduce(function (m, line) { return Math.max(m, line.length); }, 0);
  }

  // Layout: edges that touch a container box are drawn but laid out through its inner nodes ------

  function layout(cy) {
    cy.edges(".ghost").remove();
    const boxEdges = cy.edges().filter(function (e) { return e.source().isParent() || e.target().isParent(); });
    const ghosts = [];
    boxEdges.forEach(function (e) {
      ends(e.source(), "out").slice(0, 8).forEach(function (s) {
        ends(e.target(), "in").slice(0, 8).forEach(function (t) {
          if (s.id() !== t.id()) ghosts.push({ group: "edges", classes: "ghost", data: { id: "ghost-" + ghosts.length, source: s.id(), target: t.id() } });
        });
      });
    });
    cy.add(ghosts);
    cy.elements().not(boxEdges).layout({
      name: "dagre", rankDir: "LR", nodeSep: 24, rankSep: 70, edgeSep: 12, fit: false, animate: false,
    }).run();
    fitReadably(cy);
  }

  // Fit the graph, but never so small that labels blur (then its start is shown, left-aligned)
  // nor so large that one node fills the canvas.
  function fitReadably(cy) {
    cy.fit(undefined, 24);
    const bb = cy.elements().boundingBox();
    if (cy.zoom() > MAX_FIT_ZOOM) {
      cy.zoom(MAX_FIT_ZOOM);
      cy.center();
    } else if (cy.zoom() < READABLE_ZOOM) {
      cy.zoom(READABLE_ZOOM);
      cy.pan({ x: 24 - bb.x1 * READABLE_ZOOM, y: cy.height() / 2 - ((bb.y1 + bb.y2) / 2) * READABLE_ZOOM });
    }
  }

  // The inner nodes an edge leaving (out) or entering (in) a box is laid out through.
  function ends(node, direction) {
    if (!node.isParent()) return [node];
    const inner = node.descendants().filter(function (n) { return n.isChildless(); });
    const open = inner.filter(function (n) {
      const next = direction === "out" ? n.outgoers("node") : n.incomers("node");
      return next.intersection(inner).empty();
    });
    return (open.nonempty() ? open : inner).toArray();
  }

  // The view ---------------------------------------------------------------------------------------

  function GraphView(section) {
    this.section = section;
    this.url = section.dataset.graphUrl;
    this.nodeUrl = section.dataset.nodeUrl;
    this.expand = {};
    this.collapse = new Set();
    this.pending = new Map();
    this.flushTimer = null;
    this.refetch = { timer: null, again: false, busy: false };
    this.statusLine = section.querySelector("[data-graph-status]");
    this.panel = section.querySelector("[data-graph-panel]");
    this.selected = null;
    this.cy = window.cytoscape({
      container: section.querySelector("[data-graph-canvas]"), style: style(), minZoom: 0.05, maxZoom: 4,
      boxSelectionEnabled: false, selectionType: "single",
    });
    this.bind();
  }

  GraphView.prototype.query = function () {
    const params = new URLSearchParams();
    Object.keys(this.expand).forEach(function (id) { params.append("expand", id + ":" + this.expand[id]); }, this);
    this.collapse.forEach(function (id) { params.append("collapse", id); });
    const text = params.toString();
    return this.url + (text ? "?" + text : "");
  };

  GraphView.prototype.load = function () {
    return fetch(this.query(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("the graph could not be loaded (" + response.status + ")");
        return response.json();
      });
  };

  GraphView.prototype.draw = function (view) {
    const cy = this.cy;
    cy.batch(function () {
      cy.elements().remove();
      cy.add(elements(view));
      setBorders(cy);
    });
    this.sizeCanvas(view);
    layout(cy);
    this.describe(view);
    if (this.selected) cy.getElementById(this.selected).select();
  };

  // Apply a fresh view: same nodes and edges → data and classes only; otherwise draw again.
  GraphView.prototype.merge = function (view) {
    const cy = this.cy;
    const ids = view.nodes.map(function (n) { return n.id; }).concat(view.edges.map(function (e) { return e.id; }));
    const same = ids.length === cy.elements().not(".ghost").length && ids.every(function (id) { return cy.getElementById(id).nonempty(); });
    if (!same) {
      this.draw(view);
      return;
    }
    cy.batch(function () {
      view.nodes.forEach(function (n) {
        const el = cy.getElementById(n.id);
        const data = nodeData(n);
        delete data.parent;
        el.data(data);
        el.classes(nodeClasses(n) + (el.selected() ? "" : ""));
      });
      view.edges.forEach(function (e) {
        const el = cy.getElementById(e.id);
        el.data({ state: e.state, label: e.label });
        el.classes(edgeClasses(e));
      });
      setBorders(cy);
    });
    this.describe(view);
  };

  // A small graph gets a small canvas; from a dozen nodes on, the full height.
  GraphView.prototype.sizeCanvas = function (view) {
    const canvas = this.section.querySelector("[data-graph-canvas]");
    const height = Math.min(460, Math.max(220, 160 + 30 * view.nodes.length));
    if (canvas.style.height !== height + "px") {
      canvas.style.height = height + "px";
      this.cy.resize();
    }
  };

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function setBorders(cy) {
    cy.nodes().forEach(function (n) { n.data("borderColor", statusColor(n.data("status"))); });
  }

  GraphView.prototype.describe = function (view) {
    const collapsed = view.nodes.filter(function (n) { return n.container && !n.open && n.total; }).length;
    let text = plural(view.nodes.length, "node") + ", " + plural(view.edges.length, "edge");
    if (collapsed) text += "; " + collapsed + " collapsed (click one to expand it)";
    this.statusLine.textContent = text + ". Scroll to zoom, drag to pan, click a node for its details.";
  };

  GraphView.prototype.refresh = function () {
    const self = this;
    const r = this.refetch;
    if (r.busy || r.timer) {
      r.again = true;
      return;
    }
    r.busy = true;
    this.load().then(function (view) { self.merge(view); }).catch(function (error) {
      self.statusLine.textContent = error.message;
      r.again = true; // a busy or restarting server: try again rather than keep stale counts
    }).finally(function () {
      r.busy = false;
      r.timer = setTimeout(function () {
        r.timer = null;
        if (r.again) {
          r.again = false;
          self.refresh();
        }
      }, REFETCH_MS);
    });
  };

  GraphView.prototype.reopen = function () {
    const self = this;
    this.load().then(function (view) { self.draw(view); });
  };

  // Live updates, batched ------------------------------------------------------------------------

  GraphView.prototype.onStatus = function (taskId, status) {
    this.pending.set(String(taskId), status);
    if (this.flushTimer) return;
    const self = this;
    this.flushTimer = setTimeout(function () { self.flush(); }, BATCH_MS);
  };

  GraphView.prototype.flush = function () {
    const cy = this.cy;
    const pending = this.pending;
    this.flushTimer = null;
    cy.batch(function () {
      pending.forEach(function (status, id) {
        const node = cy.getElementById(id);
        if (node.empty() || node.data("status") === status) return;
        STATUSES.forEach(function (s) { node.removeClass("status-" + s); });
        node.addClass("status-" + status);
        node.data({ status: status, borderColor: statusColor(status) });
      });
    });
    pending.clear();
    this.refresh(); // counts of collapsed nodes and edge states
  };

  // Interaction ----------------------------------------------------------------------------------

  GraphView.prototype.bind = function () {
    const self = this;
    const cy = this.cy;
    cy.on("tap", "node", function (event) { self.open(event.target); });
    cy.on("tap", function (event) { if (event.target === cy) self.closePanel(); });
    cy.on("dbltap", "node", function (event) {
      const node = event.target;
      if (!node.data("container") || !node.data("task_id")) return;
      if (node.data("open")) self.collapseNode(node.data("task_id"));
      else self.expandNode(node.data("task_id"), 1);
    });
    this.section.addEventListener("click", function (event) { self.onClick(event); });
    document.addEventListener("live:message", function (event) {
      const message = event.detail.message;
      if (event.detail.stream !== "task") return;
      if (message.type === "status") self.onStatus(message.task_id, message.status);
      else if (message.type === "snapshot") self.refresh();
    });
  };

  GraphView.prototype.onClick = function (event) {
    const zoom = event.target.closest("[data-graph-zoom]");
    const expand = event.target.closest("[data-graph-expand]");
    const collapse = event.target.closest("[data-graph-collapse]");
    if (zoom) this.zoomBy(parseFloat(zoom.dataset.graphZoom));
    else if (event.target.closest("[data-graph-fit]")) this.fit();
    else if (event.target.closest("[data-graph-relayout]")) layout(this.cy);
    else if (event.target.closest("[data-graph-panel-close]")) this.closePanel();
    else if (collapse) this.collapseNode(collapse.dataset.graphCollapse);
    else if (expand) {
      const select = this.section.querySelector('[data-graph-page-select="' + expand.dataset.graphExpand + '"]');
      this.expandNode(expand.dataset.graphExpand, parseInt(expand.dataset.graphPage || (select && select.value) || "1", 10));
    }
  };

  GraphView.prototype.fit = function () {
    this.cy.fit(undefined, 24);
  };

  GraphView.prototype.zoomBy = function (factor) {
    const cy = this.cy;
    cy.zoom({ level: cy.zoom() * factor, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
  };

  GraphView.prototype.expandNode = function (id, page) {
    this.collapse.delete(String(id));
    this.expand[id] = page;
    this.reopen();
  };

  GraphView.prototype.collapseNode = function (id) {
    delete this.expand[id];
    this.collapse.add(String(id));
    this.reopen();
  };

  GraphView.prototype.open = function (node) {
    this.selected = node.id();
    this.showPanel(true);
    const extent = this.cy.extent();
    const box = node.boundingBox();
    if (box.x1 < extent.x1 || box.x2 > extent.x2 || box.y1 < extent.y1 || box.y2 > extent.y2) this.cy.center(node);
    const body = this.panel.querySelector("[data-graph-panel-body]");
    if (!node.data("task_id")) {
      body.textContent = "";
      const title = document.createElement("h3");
      title.textContent = node.data("label");
      const counts = document.createElement("p");
      counts.textContent = Object.keys(node.data("counts")).map(function (s) {
        return node.data("counts")[s] + " " + s.replace("_", " ");
      }).join(", ");
      body.append(title, counts);
      return;
    }
    const url = this.nodeUrl.replace(/\/0\/$/, "/" + node.data("task_id") + "/");
    window.htmx.ajax("GET", url, { target: body, swap: "innerHTML" });
  };

  GraphView.prototype.closePanel = function () {
    this.selected = null;
    this.showPanel(false);
    this.cy.elements().unselect();
  };

  // The panel narrows the canvas: Cytoscape measures it again and the viewport keeps its centre
  // and zoom (the selected node is then brought into view).
  GraphView.prototype.showPanel = function (visible) {
    if (this.panel.hidden === !visible) return;
    const cy = this.cy;
    const before = { x: cy.width(), y: cy.height() };
    this.panel.hidden = !visible;
    cy.resize();
    cy.panBy({ x: (cy.width() - before.x) / 2, y: (cy.height() - before.y) / 2 });
  };

  function start() {
    const section = document.querySelector("[data-graph]");
    if (!section || !window.cytoscape) return;
    const began = performance.now();
    const view = new GraphView(section);
    window.graphView = view;
    view.load().then(function (data) {
      view.draw(data);
      section.dataset.graphReady = "true";
      section.dataset.renderMs = String(Math.round(performance.now() - began));
    }).catch(function (error) {
      view.statusLine.textContent = error.message;
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
