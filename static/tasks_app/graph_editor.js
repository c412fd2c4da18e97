/*
 * The visual graph editor `/graphs/new/` (Cytoscape.js with the dagre layout).
 *
 * The spec lives in the graph: a node's data holds its spec, an edge's data its condition. Every
 * change re-checks for cycles here and posts the spec to the validate URL (debounced), which
 * answers the same errors as submitting it would, by path (`nodes.a.kwargs.x`, `edges[1].when`).
 * A task node's arguments use the execute page's generated form (fetched from the params URL and
 * cleaned there). Saving posts {name, spec}; "Save and run" then posts to the definition's run URL.
 */
(function () {
  "use strict";

  const VALIDATE_MS = 350;
  const KEY = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/;
  const CONDITION_KEYS = ["on", "all", "any", "not", "template", "path", "op", "value", "params"];

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "dataset") Object.assign(node.dataset, attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.append(c); });
    return node;
  }

  function field(labelText, input, help) {
    const id = "f-" + Math.random().toString(36).slice(2, 9);
    input.id = id;
    const parts = [el("label", { for: id, text: labelText }), input];
    if (help) parts.push(el("small", { class: "help", text: help }));
    return el("div", { class: "field" }, parts);
  }

  function select(options, value) {
    const s = el("select");
    options.forEach(function (o) {
      const option = el("option", { value: o[0], text: o[1] });
      if (o[0] === value) option.selected = true;
      s.append(option);
    });
    return s;
  }

  function postJSON(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { ok: response.ok, status: response.status, data: data };
      });
    });
  }

  // Conditions in words: the same short text the graph view shows.
  function conditionText(cond) {
    if (!cond || typeof cond !== "object") return String(cond);
    if ("on" in cond) return cond.on === "always" ? "always" : "on " + cond.on;
    if ("template" in cond) {
      const params = Object.keys(cond.params || {}).map(function (k) { return k + "=" + valueText(cond.params[k]); });
      return (cond.template + " " + params.join(" ")).trim();
    }
    if ("all" in cond || "any" in cond) {
      return (cond.all || cond.any || []).map(conditionText).join("all" in cond ? " and " : " or ");
    }
    if ("not" in cond) return "not (" + conditionText(cond.not) + ")";
    return [cond.path || "result", cond.op].concat("value" in cond ? [valueText(cond.value)] : []).join(" ");
  }

  function valueText(v) {
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function parseValue(text) {
    try {
      return JSON.parse(text);
    } catch (error) {
      return text;
    }
  }

  // A light structural check of a hand-written condition; the server has the final word.
  function conditionProblem(cond, depth) {
    if (depth > 20) return "nested too deeply";
    if (!cond || typeof cond !== "object" || Array.isArray(cond) || !Object.keys(cond).length) return "a condition is a non-empty JSON object";
    const unknown = Object.keys(cond).filter(function (k) { return CONDITION_KEYS.indexOf(k) === -1; });
    if (unknown.length) return "unknown key " + unknown[0] + "; use on, path/op/value, all, any, not or template";
    const list = cond.all || cond.any;
    if ("all" in cond || "any" in cond) {
      if (!Array.isArray(list) || !list.length) return '"all" and "any" take a non-empty list';
      for (let i = 0; i < list.length; i++) {
        const problem = conditionProblem(list[i], depth + 1);
        if (problem) return problem;
      }
    }
    if ("not" in cond) return conditionProblem(cond.not, depth + 1);
    return null;
  }

  // The editor -------------------------------------------------------------------------------------

  function Editor(root, data) {
    this.data = data;
    this.templates = data.templates;
    this.saveUrl = data.save_url;
    this.runUrl = data.id ? data.save_url.replace(/edit\/$/, "run/") : null;
    this.seq = 0;
    this.connectFrom = null;
    this.validateTimer = null;
    this.errors = {};
    this.$ = function (selector) { return root.querySelector(selector); };
    this.inspector = this.$("[data-editor-inspector]");
    this.hint = this.$("[data-editor-hint]");
    this.cy = window.cytoscape({
      container: this.$("[data-editor-canvas]"), style: this.style(), minZoom: 0.2, maxZoom: 3,
      boxSelectionEnabled: false, selectionType: "single",
    });
    // The name is rendered in the page; what was typed before this script ran is kept.
    this.load(data.spec);
    this.bind();
    this.changed();
    root.setAttribute("data-editor-ready", "true");
  }

  Editor.prototype.style = function () {
    return [
      { selector: "node", style: {
        shape: "round-rectangle", label: "data(display)", "text-wrap": "wrap", "text-valign": "center",
        "font-size": 11, width: function (n) { return Math.max(90, Math.min(220, String(n.data("display")).split("\n")[1].length * 6.5 + 24)); },
        height: 44, "background-color": "#eaf1fd", "border-width": 2, "border-color": "#2f5fd0", color: "#1d2330",
      } },
      { selector: "node.invalid", style: { "border-color": "#c53030", "border-width": 3, "background-color": "#fdeeee" } },
      { selector: "node.connect-source", style: { "border-style": "dashed", "border-width": 4 } },
      { selector: ":selected", style: { "overlay-color": "#f5a524", "overlay-opacity": 0.35, "overlay-padding": 6 } },
      { selector: "edge", style: {
        width: 2.5, "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "#6b7386",
        "target-arrow-color": "#6b7386", label: "data(label)", "font-size": 10, "text-background-color": "#fff",
        "text-background-opacity": 0.9, "text-background-padding": 2,
      } },
      { selector: "edge.invalid", style: { "line-color": "#c53030", "target-arrow-color": "#c53030" } },
    ];
  };

  Editor.prototype.nodeDisplay = function (key, spec) {
    return key + "\n" + (spec.task || (spec.kind || "task") + " (JSON)");
  };

  Editor.prototype.load = function (spec) {
    const self = this;
    const nodes = (spec && spec.nodes) || {};
    Object.keys(nodes).forEach(function (key) { self.addNode(key, nodes[key], true); });
    ((spec && spec.edges) || []).forEach(function (e) { self.addEdge(e.from, e.to, e.when, true); });
    this.extra = {};
    Object.keys(spec || {}).forEach(function (k) {
      if (["kind", "nodes", "edges", "name"].indexOf(k) === -1) self.extra[k] = spec[k];
    });
    this.layout();
  };

  Editor.prototype.layout = function () {
    if (this.cy.nodes().nonempty()) {
      this.cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 90, fit: true, padding: 30 }).run();
      if (this.cy.zoom() > 1.4) this.cy.zoom(1.4).center();
    }
  };

  Editor.prototype.spec = function () {
    const nodes = {};
    this.cy.nodes().forEach(function (n) { nodes[n.id()] = n.data("spec"); });
    const edges = this.orderedEdges().map(function (e) {
      const edge = { from: e.source().id(), to: e.target().id() };
      if (e.data("when")) edge.when = e.data("when");
      return edge;
    });
    const spec = Object.assign({ kind: "graph" }, this.extra, { nodes: nodes, edges: edges });
    const name = this.$("[data-editor-name]").value.trim();
    if (name) spec.name = name;
    return spec;
  };

  Editor.prototype.orderedEdges = function () {
    return this.cy.edges().sort(function (a, b) { return a.data("seq") - b.data("seq"); }).toArray();
  };

  // Changing the graph ---------------------------------------------------------------------------

  Editor.prototype.addNode = function (key, spec, quiet) {
    const position = quiet ? undefined : this.freeSpot();
    this.cy.add({ group: "nodes", data: { id: key, spec: spec, display: this.nodeDisplay(key, spec) }, position: position });
    if (!quiet) this.changed();
  };

  Editor.prototype.freeSpot = function () {
    const box = this.cy.nodes().boundingBox();
    if (this.cy.nodes().empty()) return { x: 100, y: 100 };
    return { x: box.x2 + 140, y: (box.y1 + box.y2) / 2 };
  };

  Editor.prototype.addEdge = function (from, to, when, quiet) {
    if (!quiet) {
      const problem = this.edgeProblem(from, to);
      if (problem) {
        this.say(problem);
        return false;
      }
    }
    this.seq += 1;
    const data = { id: "edge-" + this.seq, source: from, target: to, seq: this.seq, when: when || null,
      label: when ? conditionText(when) : "" };
    this.cy.add({ group: "edges", data: data });
    if (!quiet) {
      this.say("Connected " + from + " → " + to + ". Pick its condition in the panel.");
      this.changed();
      this.inspect(this.cy.getElementById(data.id));
    }
    return true;
  };

  // Client-side checks before an edge exists: self loops, duplicates and cycles.
  Editor.prototype.edgeProblem = function (from, to) {
    if (!from || !to) return "Choose both ends of the edge.";
    if (from === to) return "An edge cannot join a node to itself.";
    if (this.cy.edges().some(function (e) { return e.source().id() === from && e.target().id() === to; })) {
      return from + " and " + to + " are already connected.";
    }
    const path = this.pathBetween(to, from);
    if (path) return "Refused: " + from + " → " + path.join(" → ") + " would make a cycle; graphs are acyclic.";
    return null;
  };

  Editor.prototype.pathBetween = function (start, goal) {
    const cy = this.cy;
    const seen = {};
    const stack = [[start]];
    while (stack.length) {
      const path = stack.pop();
      const last = path[path.length - 1];
      if (last === goal) return path;
      if (seen[last]) continue;
      seen[last] = true;
      cy.getElementById(last).outgoers("node").forEach(function (n) { stack.push(path.concat([n.id()])); });
    }
    return null;
  };

  Editor.prototype.removeSelected = function (element) {
    element.remove();
    this.inspector.replaceChildren(el("p", { class: "muted", text: "Select a node or an edge to edit it." }));
    this.changed();
  };

  Editor.prototype.changed = function () {
    this.fillEdgeSelects();
    this.$("[data-editor-spec]").textContent = JSON.stringify(this.spec(), null, 2);
    clearTimeout(this.validateTimer);
    const self = this;
    this.validateTimer = setTimeout(function () { self.validate(); }, VALIDATE_MS);
  };

  Editor.prototype.fillEdgeSelects = function () {
    const keys = this.cy.nodes().map(function (n) { return n.id(); });
    ["[data-editor-edge-from]", "[data-editor-edge-to]"].forEach(function (selector, i) {
      const s = this.$(selector);
      const current = s.value;
      s.replaceChildren();
      keys.forEach(function (k) { s.append(el("option", { value: k, text: k })); });
      if (keys.indexOf(current) !== -1) s.value = current;
      else if (keys.length > i) s.value = keys[Math.min(i, keys.length - 1)];
    }, this);
  };

  // Validation -----------------------------------------------------------------------------------

  Editor.prototype.validate = function () {
    const self = this;
    const spec = this.spec();
    if (!Object.keys(spec.nodes).length) {
      this.showErrors({ nodes: "add at least one node" });
      return Promise.resolve(false);
    }
    return postJSON(this.data.validate_url, { spec: spec }).then(function (answer) {
      self.showErrors(answer.ok ? {} : (answer.data.errors || { spec: "the check failed (" + answer.status + ")" }));
      return answer.ok;
    });
  };

  Editor.prototype.showErrors = function (errors) {
    this.errors = errors;
    const list = this.$("[data-editor-errors]");
    list.replaceChildren();
    const paths = Object.keys(errors);
    if (!paths.length) list.append(el("li", { class: "ok", text: "✓ No problems: the graph can be saved and run." }));
    paths.forEach(function (path) { list.append(el("li", { "data-error-path": path, text: path + ": " + errors[path] })); });
    const edges = this.orderedEdges();
    this.cy.elements().removeClass("invalid");
    const cy = this.cy;
    paths.forEach(function (path) {
      const node = /^nodes\.([^.]+)/.exec(path);
      const edge = /^edges\[(\d+)\]/.exec(path);
      if (node) cy.getElementById(node[1]).addClass("invalid");
      if (edge && edges[+edge[1]]) edges[+edge[1]].addClass("invalid");
    });
    this.$("[data-editor-save]").dataset.valid = String(!paths.length);
  };

  // The inspector: a node's arguments, an edge's condition ---------------------------------------

  Editor.prototype.inspect = function (element) {
    this.cy.elements().unselect();
    element.select();
    if (element.isNode()) this.inspectNode(element);
    else this.inspectEdge(element);
  };

  Editor.prototype.inspectNode = function (node) {
    const self = this;
    const spec = node.data("spec");
    const heading = el("h2", { text: "Node " + node.id() });
    const connect = el("button", { type: "button", "data-editor-connect": "", text: "Connect from " + node.id() + "…" });
    const remove = el("button", { type: "button", class: "danger", "data-editor-remove": "", text: "Remove node" });
    const body = el("div", { "data-node-body": "" });
    this.inspector.replaceChildren(heading, el("div", { class: "actions-inline" }, [connect, remove]), body);
    connect.addEventListener("click", function () { self.startConnect(node); });
    remove.addEventListener("click", function () { self.removeSelected(node); });
    if (spec.task && !spec.kind) this.loadParams(node, body);
    else this.jsonNode(node, body);
  };

  Editor.prototype.loadParams = function (node, body) {
    const self = this;
    const spec = node.data("spec");
    const url = this.data.params_url + "?" + new URLSearchParams({ task: spec.task, kwargs: JSON.stringify(spec.kwargs || {}) });
    body.replaceChildren(el("p", { class: "muted", text: "Loading the arguments of " + spec.task + "…" }));
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      body.innerHTML = html;
      const form = body.querySelector("form");
      if (form) form.addEventListener("submit", function (event) { event.preventDefault(); self.applyParams(node, form); });
    });
  };

  Editor.prototype.applyParams = function (node, form) {
    const self = this;
    const status = form.querySelector("[data-params-status]");
    form.querySelectorAll(".field-error").forEach(function (e) { e.remove(); });
    fetch(this.data.params_url, {
      method: "POST", credentials: "same-origin", body: new FormData(form), headers: { "X-CSRFToken": csrfToken() },
    }).then(function (r) { return r.json().then(function (d) { return { ok: r.ok, data: d }; }); }).then(function (answer) {
      if (!answer.ok) {
        Object.keys(answer.data.errors || {}).forEach(function (name) {
          const input = form.querySelector('[name="' + name + '"]');
          const message = el("p", { class: "field-error", text: [].concat(answer.data.errors[name]).join(" ") });
          (input ? input.parentElement : form).append(message);
        });
        status.textContent = "✕ Fix the arguments above.";
        return;
      }
      const spec = Object.assign({}, node.data("spec"), { kwargs: answer.data.kwargs });
      if (!Object.keys(spec.kwargs).length) delete spec.kwargs;
      node.data("spec", spec);
      status.textContent = "✓ Applied.";
      self.changed();
    });
  };

  Editor.prototype.jsonNode = function (node, body) {
    const self = this;
    const area = el("textarea", { rows: "10", class: "mono json-editor", spellcheck: "false" });
    area.value = JSON.stringify(node.data("spec"), null, 2);
    const apply = el("button", { type: "button", class: "primary", text: "Apply spec" });
    const status = el("small", { class: "help", "aria-live": "polite" });
    body.replaceChildren(el("p", { class: "muted", text: "A nested workflow: edit its spec as JSON." }),
      field("Spec (JSON)", area), el("div", { class: "actions-inline" }, [apply, status]));
    apply.addEventListener("click", function () {
      try {
        const spec = JSON.parse(area.value);
        if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new Error("a spec is a JSON object");
        node.data({ spec: spec, display: self.nodeDisplay(node.id(), spec) });
        status.textContent = "✓ Applied.";
        self.changed();
      } catch (error) {
        status.textContent = "✕ " + error.message;
      }
    });
  };

  Editor.prototype.inspectEdge = function (edge) {
    const self = this;
    const when = edge.data("when") || { on: "success" };
    const mode = "template" in when ? "template" : "on" in when ? "on" : "op" in when ? "predicate" : "json";
    const modes = select([["on", "Outcome of the source"], ["template", "A template"], ["predicate", "Test on the result (path, op, value)"],
      ["json", "Condition builder (JSON: all / any / not)"]], mode);
    modes.setAttribute("data-condition-mode", "");
    const body = el("div", { "data-condition-body": "" });
    const apply = el("button", { type: "button", class: "primary", "data-condition-apply": "", text: "Apply condition" });
    const remove = el("button", { type: "button", class: "danger", text: "Remove edge" });
    const status = el("small", { class: "help", "data-condition-status": "", "aria-live": "polite" });
    this.inspector.replaceChildren(
      el("h2", { text: "Edge " + edge.source().id() + " → " + edge.target().id() }),
      field("Taken when", modes), body, el("div", { class: "actions-inline" }, [apply, remove]), status);
    const render = function () { self.conditionForm(modes.value, when, body); };
    modes.addEventListener("change", render);
    render();
    remove.addEventListener("click", function () { self.removeSelected(edge); });
    apply.addEventListener("click", function () {
      const result = self.readCondition(modes.value, body);
      if (result.error) {
        status.textContent = "✕ " + result.error;
        return;
      }
      edge.data({ when: result.when, label: conditionText(result.when) });
      status.textContent = "✓ Applied: " + conditionText(result.when);
      self.changed();
    });
  };

  Editor.prototype.conditionForm = function (mode, when, body) {
    body.replaceChildren();
    if (mode === "on") {
      body.append(field("Outcome", select([["success", "success"], ["failure", "failure"], ["always", "always"]], when.on || "success")));
    } else if (mode === "template") {
      const names = Object.keys(this.templates);
      const chosen = when.template || "label_is";
      const picker = select(names.map(function (n) { return [n, n]; }), chosen);
      picker.setAttribute("data-template", "");
      const params = el("div", { class: "template-params" });
      const self = this;
      const fill = function () { self.templateParams(picker.value, picker.value === when.template ? when.params || {} : {}, params); };
      picker.addEventListener("change", fill);
      body.append(field("Template", picker), params);
      fill();
    } else if (mode === "predicate") {
      body.append(field("Path in the result", el("input", { class: "mono", "data-pred": "path", value: when.path || "" }), "dotted, e.g. label or items.0.price"));
      const op = select(this.data.ops.map(function (o) { return [o, o]; }), when.op || "eq");
      op.setAttribute("data-pred", "op");
      body.append(field("Operator", op));
      body.append(field("Value", el("input", { class: "mono", "data-pred": "value", value: "value" in when ? valueText(when.value) : "" }), "JSON, or plain text for a string"));
    } else {
      const area = el("textarea", { rows: "7", class: "mono json-editor", "data-condition-json": "", spellcheck: "false" });
      area.value = JSON.stringify(when, null, 2);
      body.append(field("Condition (JSON)", area, 'e.g. {"all": [{"path": "score", "op": "gte", "value": 0.5}, {"not": {"on": "failure"}}]}'));
    }
  };

  Editor.prototype.templateParams = function (name, values, box) {
    const template = this.templates[name];
    box.replaceChildren(el("p", { class: "help", text: template.description }));
    Object.keys(template.params).forEach(function (param) {
      const info = template.params[param];
      let input;
      if (info.type === "boolean") {
        input = select([["true", "true"], ["false", "false"]], String(values[param] !== false));
      } else {
        input = el("input", { class: "mono", type: info.type === "number" ? "number" : "text", step: "any",
          value: param in values ? valueText(values[param]) : "" });
      }
      input.setAttribute("data-param", param);
      input.dataset.type = info.type;
      box.append(field(param + (info.required ? " (required)" : ""), input));
    });
  };

  Editor.prototype.readCondition = function (mode, body) {
    if (mode === "on") return { when: { on: body.querySelector("select").value } };
    if (mode === "template") {
      const params = {};
      body.querySelectorAll("[data-param]").forEach(function (input) {
        if (input.value === "") return;
        const type = input.dataset.type;
        params[input.dataset.param] = type === "number" ? Number(input.value) : type === "boolean" ? input.value === "true"
          : type === "string" ? input.value : parseValue(input.value);
      });
      return { when: { template: body.querySelector("[data-template]").value, params: params } };
    }
    if (mode === "predicate") {
      const cond = { path: body.querySelector('[data-pred="path"]').value.trim(), op: body.querySelector('[data-pred="op"]').value };
      const value = body.querySelector('[data-pred="value"]').value;
      if (!cond.path) delete cond.path;
      if (value !== "" || ["exists", "truthy"].indexOf(cond.op) === -1) cond.value = parseValue(value);
      return { when: cond };
    }
    try {
      const when = JSON.parse(body.querySelector("[data-condition-json]").value);
      const problem = conditionProblem(when, 0);
      return problem ? { error: problem } : { when: when };
    } catch (error) {
      return { error: "not valid JSON: " + error.message };
    }
  };

  // Connecting by clicking -----------------------------------------------------------------------

  Editor.prototype.startConnect = function (node) {
    this.cy.nodes().removeClass("connect-source");
    this.connectFrom = node.id();
    node.addClass("connect-source");
    this.say("Now click the node that " + node.id() + " leads to (Escape to stop).");
  };

  Editor.prototype.finishConnect = function (target) {
    const from = this.connectFrom;
    this.connectFrom = null;
    this.cy.nodes().removeClass("connect-source");
    if (from !== target.id()) this.addEdge(from, target.id());
  };

  Editor.prototype.say = function (text) {
    this.hint.textContent = text;
  };

  // Adding nodes, saving, running ----------------------------------------------------------------

  Editor.prototype.newKey = function (task) {
    const typed = this.$("[data-editor-node-key]").value.trim();
    if (typed) return typed;
    const base = task.split(".").pop().replace(/[^A-Za-z0-9_.-]/g, "_");
    let key = base;
    for (let i = 2; this.cy.getElementById(key).nonempty(); i++) key = base + "_" + i;
    return key;
  };

  Editor.prototype.onAddNode = function () {
    const task = this.$("[data-editor-task]").value;
    const key = this.newKey(task);
    if (!KEY.test(key)) return this.say("Node names are 1-100 letters, digits, _ . - (not starting with . or -).");
    if (this.cy.getElementById(key).nonempty()) return this.say("There is already a node " + key + ".");
    this.addNode(key, { task: task });
    this.$("[data-editor-node-key]").value = "";
    this.say("Added " + key + ". Set its arguments in the panel.");
    this.inspect(this.cy.getElementById(key));
  };

  Editor.prototype.save = function () {
    const self = this;
    const saved = this.$("[data-editor-saved]");
    saved.textContent = "Saving…";
    return postJSON(this.saveUrl, { name: this.$("[data-editor-name]").value, spec: this.spec() }).then(function (answer) {
      if (!answer.ok) {
        self.showErrors(answer.data.errors || {});
        saved.textContent = "✕ Not saved: see the problems below.";
        return null;
      }
      self.saveUrl = answer.data.edit_url;
      self.runUrl = answer.data.run_url;
      history.replaceState(null, "", answer.data.edit_url);
      saved.textContent = "✓ Saved “" + answer.data.name + "”.";
      return answer.data;
    });
  };

  Editor.prototype.run = function () {
    const self = this;
    this.save().then(function (saved) {
      if (!saved) return;
      const form = self.$("[data-editor-run-form]");
      form.action = self.runUrl;
      form.submit();
    });
  };

  Editor.prototype.bind = function () {
    const self = this;
    const cy = this.cy;
    cy.on("tap", "node", function (event) {
      if (self.connectFrom) self.finishConnect(event.target);
      else self.inspect(event.target);
    });
    cy.on("tap", "edge", function (event) { self.inspect(event.target); });
    this.$("[data-editor-add-node]").addEventListener("click", function () { self.onAddNode(); });
    this.$("[data-editor-add-edge]").addEventListener("click", function () {
      self.addEdge(self.$("[data-editor-edge-from]").value, self.$("[data-editor-edge-to]").value);
    });
    this.$("[data-editor-task]").addEventListener("change", function () { self.describeTask(); });
    this.$("[data-editor-name]").addEventListener("input", function () { self.changed(); });
    this.$("[data-editor-save]").addEventListener("click", function () { self.save(); });
    this.$("[data-editor-run]").addEventListener("click", function () { self.run(); });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && self.connectFrom) {
        self.connectFrom = null;
        cy.nodes().removeClass("connect-source");
        self.say("Stopped connecting.");
      }
    });
    this.describeTask();
  };

  Editor.prototype.describeTask = function () {
    const name = this.$("[data-editor-task]").value;
    const task = this.data.tasks.find(function (t) { return t.name === name; });
    this.$("[data-editor-task-help]").textContent = task ? task.description : "";
  };

  function start() {
    const data = document.getElementById("graph-editor-data");
    if (!data || !window.cytoscape) return;
    window.graphEditor = new Editor(document.querySelector("main"), JSON.parse(data.textContent));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
