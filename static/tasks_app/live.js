/*
 * Live updates over the WebSockets of CONTRACT.md §6.
 *
 * <body data-ws-user="/ws/tasks/" data-ws-task="/ws/tasks/12/"> opens one stream per attribute
 * ("user", "task"), reconnecting with backoff. Each JSON message is dispatched as a
 * `live:message` event on document ({stream, message}) and applied to the page:
 *
 *   data-live-on="status progress …"  the element gets an htmx `live-refresh` event (it re-fetches
 *                                      its partial) when a message of those types arrives, at most
 *                                      once per data-live-throttle ms (default 500), the last one
 *                                      always delivered; narrowed by data-live-task="ID" (that task
 *                                      only), data-live-except="ID" (other tasks only) and
 *                                      data-live-stream="user|task"; "snapshot" means (re)connected.
 *   data-progress-task="ID"            a progress bar set from `progress` messages at once.
 *   data-status-task="ID"              a status badge set from `status` messages at once.
 *   data-log-tail                      a list that `log` messages are appended to (data-min-level,
 *                                      data-q filter them; data-log-stream picks the stream).
 *
 * A data-live-on element whose stream is not open is refreshed every 10 s instead; #live-state
 * says "live" while every stream of the page is open.
 */
(function () {
  "use strict";

  const SYMBOLS = {
    pending: "○", queued: "○", running: "◐", paused: "⏸", waiting_approval: "⚠",
    completed: "✓", failed: "✕", interrupted: "⚠", skipped: "⊘",
  };
  const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 };
  const POLL_MS = 10000;
  const REFUSED = [4401, 4403, 4404];
  const streams = {};
  const timers = new Map();
  const stale = new Set(); // keys asked to refresh while their request was out

  function connect(name, path) {
    let delay = 1000;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const stream = { name: name, open: false, socket: null };
    streams[name] = stream;

    function open() {
      const socket = new WebSocket(scheme + "//" + location.host + path);
      stream.socket = socket;
      socket.addEventListener("open", function () {
        delay = 1000;
        stream.open = true;
        showState();
      });
      socket.addEventListener("message", function (event) {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        if (message && typeof message.type === "string") {
          dispatch(name, message);
        }
      });
      socket.addEventListener("close", function (event) {
        stream.open = false;
        showState();
        if (REFUSED.indexOf(event.code) !== -1) return; // not signed in, or the task is gone
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      });
    }
    open();
  }

  function isOpen(name) {
    return Boolean(streams[name] && streams[name].open);
  }

  function showState() {
    const el = document.getElementById("live-state");
    if (!el) return;
    // Live only when every stream of the page is: the task stream feeds most of a task's page.
    const live = Object.keys(streams).every(isOpen);
    el.dataset.state = live ? "live" : "offline";
    el.textContent = live ? "● live" : "○ offline";
    el.title = live ? "Live updates are on" : "Live updates are off; the page refreshes every 10 s";
  }

  function dispatch(stream, message) {
    document.dispatchEvent(new CustomEvent("live:message", { detail: { stream: stream, message: message } }));
    if (message.type === "progress") setProgress(message);
    if (message.type === "status") setStatus(message);
    if (message.type === "log") appendLog(stream, message);
    // A snapshot may differ from what the page was rendered with (a change between the render and
    // the subscription, or a reconnect): refresh what listens to it either way.
    scheduleRefreshes(stream, message);
  }

  // Partial refreshes ---------------------------------------------------------------------------

  function matches(el, stream, message) {
    const types = (el.dataset.liveOn || "").split(/\s+/);
    if (types.indexOf(message.type) === -1) return false;
    if (el.dataset.liveStream && el.dataset.liveStream !== stream) return false;
    if (message.type === "snapshot") return true;
    const id = String(message.task_id);
    if (el.dataset.liveTask && el.dataset.liveTask !== id) return false;
    if (el.dataset.liveExcept && el.dataset.liveExcept === id) return false;
    return true;
  }

  function scheduleRefreshes(stream, message) {
    document.querySelectorAll("[data-live-on]").forEach(function (el) {
      if (matches(el, stream, message)) schedule(el);
    });
  }

  function keyOf(el) {
    return el.id || el.getAttribute("hx-get") || el.dataset.liveOn;
  }

  // Leading and trailing throttle: refresh now, then at most once per interval, never losing the last.
  function schedule(el) {
    const key = keyOf(el);
    const wait = parseInt(el.dataset.liveThrottle || "500", 10);
    const state = timers.get(key);
    if (state) {
      state.pending = true;
      return;
    }
    refresh(key);
    const entry = { pending: false };
    timers.set(key, entry);
    const tick = function () {
      if (entry.pending) {
        entry.pending = false;
        refresh(key);
        setTimeout(tick, wait);
      } else {
        timers.delete(key);
      }
    };
    setTimeout(tick, wait);
  }

  function refresh(key) {
    // Look the element up again: an earlier refresh may have replaced it.
    const el = document.getElementById(key) || document.querySelector('[hx-get="' + CSS.escape(key) + '"]');
    if (!el || !window.htmx) return;
    // Asked again while its request is out: htmx would queue the new request on this element and
    // drop it once the answer (older than the message) has swapped the element out. Ask afterwards.
    if (el.classList.contains("htmx-request")) {
      stale.add(key);
      return;
    }
    window.htmx.trigger(el, "live-refresh");
  }

  function refreshStale() {
    const keys = Array.from(stale);
    stale.clear();
    keys.forEach(refresh);
  }

  // After the settle: a swapped-in element listens for live-refresh only from then on.
  document.addEventListener("htmx:afterSettle", refreshStale);
  document.addEventListener("htmx:afterRequest", function (event) {
    if (!event.detail.successful) refreshStale(); // nothing swapped, nothing to settle
  });

  // Without its stream (closed, or not opened yet) an element is refreshed on the poll instead.
  function refreshUnstreamed() {
    document.querySelectorAll("[data-live-on]").forEach(function (el) {
      const name = el.dataset.liveStream;
      const streamed = name ? isOpen(name) : Object.keys(streams).some(isOpen);
      if (!streamed && window.htmx && el.getAttribute("hx-get")) window.htmx.trigger(el, "live-refresh");
    });
  }

  // Direct updates ------------------------------------------------------------------------------

  function setProgress(message) {
    const percent = Math.floor(Number(message.percent) || 0);
    document.querySelectorAll('[data-progress-task="' + message.task_id + '"]').forEach(function (el) {
      const fill = el.querySelector(".fill");
      const text = el.querySelector(".pct");
      const current = parseInt(el.getAttribute("aria-valuenow") || "0", 10);
      if (percent < current) return; // progress never goes backwards within an attempt
      if (fill) fill.style.width = percent + "%";
      if (text) text.textContent = percent + "%";
      el.setAttribute("aria-valuenow", String(percent));
    });
  }

  function setStatus(message) {
    document.querySelectorAll('[data-status-task="' + message.task_id + '"]').forEach(function (el) {
      el.className = "badge status-" + message.status;
      el.textContent = "";
      const symbol = document.createElement("span");
      symbol.setAttribute("aria-hidden", "true");
      symbol.textContent = SYMBOLS[message.status] || "?";
      el.append(symbol, " " + String(message.status).replace("_", " "));
    });
  }

  function appendLog(stream, message) {
    document.querySelectorAll("[data-log-tail]").forEach(function (list) {
      if ((list.dataset.logStream || "task") !== stream) return;
      if ((LEVELS[message.level] || 0) < parseInt(list.dataset.minLevel || "0", 10)) return;
      const words = (list.dataset.q || "").toLowerCase().split(/\s+/).filter(Boolean);
      const text = String(message.message || "");
      if (!words.every(function (w) { return text.toLowerCase().indexOf(w) !== -1; })) return;
      const empty = list.querySelector("[data-log-empty]");
      if (empty) empty.remove();
      const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.append(logLine(message));
      const max = parseInt(list.dataset.maxLines || "500", 10);
      while (list.children.length > max) list.firstElementChild.remove();
      if (nearBottom) list.scrollTop = list.scrollHeight;
    });
  }

  function logLine(message) {
    const li = document.createElement("li");
    li.className = "level-" + String(message.level || "info").toLowerCase() + " live-line";
    const time = document.createElement("time");
    const at = message.at ? new Date(message.at) : new Date();
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour12: false });
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = message.level || "";
    const text = document.createElement("span");
    text.className = "msg";
    text.textContent = message.message || "";
    li.append(time, " ", level, " #" + message.task_id + " ", text);
    return li;
  }

  function start() {
    const body = document.body;
    if (body.dataset.wsUser) connect("user", body.dataset.wsUser);
    if (body.dataset.wsTask) connect("task", body.dataset.wsTask);
    if (!body.dataset.wsUser && !body.dataset.wsTask) return;
    showState();
    setInterval(refreshUnstreamed, POLL_MS);
  }

  window.Live = { connect: connect, dispatch: dispatch, streams: streams };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
