/*
 * Small behaviours of every page: confirmation dialogs, dismissible messages, row selection,
 * the JSON editor's validation, the chat panel (POST /api/chat/), and browser desktop
 * notifications for `notification` messages of the live streams.
 */
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  }

  // Dialogs: a button with data-dialog="ID" opens that <dialog> instead of submitting its form.
  document.addEventListener("click", function (event) {
    const opener = event.target.closest("[data-dialog]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.dialog);
      if (dialog && typeof dialog.showModal === "function") {
        event.preventDefault();
        updateDialogCount(dialog);
        dialog.showModal();
      }
      return;
    }
    const closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      closer.closest("dialog").close();
      return;
    }
    const dismiss = event.target.closest("[data-dismiss]");
    if (dismiss) dismiss.parentElement.remove();
  });

  function checkedIds(formSelector) {
    const form = document.querySelector(formSelector);
    return form ? Array.from(form.querySelectorAll('input[name="ids"]:checked')).map(function (c) { return c.value; }) : [];
  }

  function updateDialogCount(dialog) {
    const form = dialog.querySelector("[data-copy-checked]");
    if (!form) return;
    const n = checkedIds(form.dataset.copyChecked).length;
    const title = dialog.querySelector("h2");
    if (title) title.textContent = n ? "Cancel " + n + " selected task" + (n === 1 ? "" : "s") + "?" : "No task selected";
    const submit = form.querySelector('button[type="submit"]');
    if (submit) submit.disabled = n === 0;
  }

  // The bulk cancel dialog carries its own form: copy the selected rows and the current URL into it.
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("[data-copy-checked]");
    if (!form) return;
    form.querySelectorAll('input[name="ids"]').forEach(function (i) { i.remove(); });
    checkedIds(form.dataset.copyChecked).forEach(function (id) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = "ids";
      input.value = id;
      form.append(input);
    });
    const next = form.querySelector('input[name="next"]');
    if (next) next.value = location.pathname + location.search;
  });

  // Row selection on the task list.
  document.addEventListener("change", function (event) {
    const all = event.target.closest("[data-select-all]");
    const form = event.target.closest("form");
    if (!form) return;
    if (all) {
      form.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = all.checked; });
    }
    const count = form.querySelector("[data-selected-count]");
    if (count) count.textContent = form.querySelectorAll('input[name="ids"]:checked').length + " selected";
  });

  // JSON editor: say at once whether the text parses.
  document.addEventListener("input", function (event) {
    const area = event.target.closest("textarea.json-editor");
    if (!area) return;
    const status = area.parentElement.querySelector("[data-json-status]");
    if (!area.value.trim()) {
      area.setCustomValidity("");
      if (status) status.textContent = "";
      return;
    }
    try {
      JSON.parse(area.value);
      area.setCustomValidity("");
      if (status) status.textContent = "✓ valid JSON";
    } catch (error) {
      area.setCustomValidity("Not valid JSON");
      if (status) status.textContent = "✕ " + error.message;
    }
  });

  // Chat panel ---------------------------------------------------------------------------------

  function chatLine(kind, text) {
    const log = document.querySelector(".chat-log");
    const li = document.createElement("li");
    li.className = "chat-" + kind;
    li.textContent = text;
    log.append(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  function toggleChat(open) {
    const panel = document.getElementById("chat-panel");
    const toggle = document.getElementById("chat-toggle");
    if (!panel || !toggle) return;
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) document.getElementById("chat-input").focus();
    else toggle.focus();
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("#chat-toggle")) {
      toggleChat(document.getElementById("chat-panel").hidden);
    } else if (event.target.closest("[data-chat-close]")) {
      toggleChat(false);
    }
  });

  document.addEventListener("keydown", function (event) {
    const panel = document.getElementById("chat-panel");
    if (event.key === "Escape" && panel && !panel.hidden && panel.contains(document.activeElement)) toggleChat(false);
  });

  document.addEventListener("submit", function (event) {
    const form = event.target.closest(".chat-form");
    if (!form) return;
    event.preventDefault();
    const input = form.querySelector("input[name=message]");
    const text = input.value.trim();
    if (!text) return;
    chatLine("me", text);
    input.value = "";
    const waiting = chatLine("bot pending", "…");
    fetch(form.dataset.chatUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ message: text }),
    })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) throw new Error(data.detail || "the assistant answered " + response.status);
          return data;
        });
      })
      .then(function (data) {
        waiting.className = "chat-bot";
        waiting.textContent = data.reply || "(no reply)";
      })
      .catch(function (error) {
        waiting.className = "chat-bot chat-error";
        waiting.textContent = "Sorry, no answer: " + error.message + ".";
      });
  });

  // Desktop notifications ------------------------------------------------------------------------

  const seen = new Map();

  function duplicate(message) {
    const key = JSON.stringify([message.task_id, message.title, message.body, message.id]);
    const now = Date.now();
    seen.forEach(function (at, k) { if (now - at > 5000) seen.delete(k); });
    if (seen.has(key)) return true;
    seen.set(key, now);
    return false;
  }

  document.addEventListener("live:message", function (event) {
    const message = event.detail.message;
    if (message.type !== "notification" || message.desktop === false || duplicate(message)) return;
    if ("Notification" in window && Notification.permission === "granted") {
      const note = new Notification(message.title || "Orchestrator", { body: message.body || "", tag: String(message.id || "") || undefined });
      note.onclick = function () {
        window.focus();
        if (message.task_id) location.href = "/tasks/" + message.task_id + "/";
      };
    }
  });

  function showPermissionButtons() {
    document.querySelectorAll("[data-desktop-notifications]").forEach(function (button) {
      if (!("Notification" in window)) return;
      button.hidden = Notification.permission === "granted";
      button.disabled = Notification.permission === "denied";
      if (Notification.permission === "denied") {
        button.hidden = false;
        button.textContent = "Desktop notifications are blocked in this browser";
      }
    });
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-desktop-notifications]") || !("Notification" in window)) return;
    Notification.requestPermission().then(showPermissionButtons);
  });

  document.addEventListener("DOMContentLoaded", showPermissionButtons);
})();
