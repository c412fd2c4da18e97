/*
 * The Schedules page: <time data-local datetime="ISO"> reads as "YYYY-MM-DD HH:MM:SS" in the
 * browser's time zone (the person's), also after an htmx swap; the time zone field of the new
 * schedule form (data-default-zone), untouched, starts at that zone.
 */
(function () {
  "use strict";

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const format = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });

  function local(iso) {
    const parts = {};
    format.formatToParts(new Date(iso)).forEach(function (part) { parts[part.type] = part.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" + parts.second;
  }

  function apply(root) {
    root.querySelectorAll("time[data-local]").forEach(function (time) {
      time.textContent = local(time.getAttribute("datetime"));
      time.title = zone;
    });
    root.querySelectorAll("[data-browser-zone]").forEach(function (el) { el.textContent = zone; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    apply(document);
    document.querySelectorAll("#new-schedule input[data-default-zone]").forEach(function (input) {
      if (!input.value || (input.value === "UTC" && !input.form.querySelector(".field-error"))) input.value = zone;
    });
  });
  document.addEventListener("htmx:afterSettle", function () { apply(document); });
})();
