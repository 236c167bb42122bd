/* pgqueue dashboard: live regions, the refresh choice, UTC or local times, "choose all".
 *
 * The pages work without this script (links and forms). With it:
 * - every element marked data-live is refreshed in place: the script fetches the page's own
 *   URL every N seconds (off, 2, 5, 10 or 30; the choice is kept per page in localStorage),
 *   and swaps each live region for its new version. Nothing is fetched while the tab is
 *   hidden; a region the user is working in (focus inside, a ticked box) is left alone.
 * - times (<time class="abs">) switch between UTC and the browser's zone.
 * No inline script, no eval, nothing from another origin (the Content-Security-Policy allows
 * none of them).
 */
(function () {
  "use strict";

  var body = document.body;
  var page = body.getAttribute("data-page") || "page";
  var pageDefault = body.getAttribute("data-refresh") || "0";
  var controls = document.getElementById("pgq-controls");
  var select = document.getElementById("pgq-refresh");
  var status = document.getElementById("pgq-live-status");
  var tzButton = document.getElementById("pgq-tz");
  var timer = null;
  var inFlight = false;

  function load(key, fallback) {
    try {
      var value = window.localStorage.getItem("pgqueue." + key);
      return value === null ? fallback : value;
    } catch (e) {
      return fallback;
    }
  }

  function save(key, value) {
    try { window.localStorage.setItem("pgqueue." + key, value); } catch (e) { /* private mode */ }
  }

  function say(text) {
    if (status) { status.textContent = text; }
  }

  function seconds() {
    var n = parseInt(select ? select.value : pageDefault, 10);
    return isNaN(n) || n < 0 ? 0 : n;
  }

  function busy(region) {
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active) &&
        (active.tagName === "INPUT" || active.tagName === "SELECT" || active.tagName === "TEXTAREA")) {
      return true;
    }
    return region.querySelector("input[type=checkbox]:checked") !== null;
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    var every = seconds();
    if (every > 0 && document.visibilityState !== "hidden") {
      timer = window.setTimeout(refresh, every * 1000);
    }
  }

  function refresh() {
    if (document.visibilityState === "hidden") {
      say("paused while hidden");
      return;
    }
    if (inFlight) { schedule(); return; }
    inFlight = true;
    window.fetch(window.location.href, {
      headers: { "X-Pgqueue-Live": "1" }, credentials: "same-origin", cache: "no-store"
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var regions = document.querySelectorAll("[data-live]");
      var skipped = 0;
      for (var i = 0; i < regions.length; i++) {
        var region = regions[i];
        var replacement = region.id ? fresh.getElementById(region.id) : null;
        if (!replacement) { continue; }
        if (busy(region)) { skipped++; continue; }
        region.replaceWith(document.importNode(replacement, true));
      }
      localize(document);
      var now = new Date();
      say((skipped ? "kept your selection; " : "") + "updated " + now.toLocaleTimeString());
    }).catch(function (error) {
      say("update failed (" + error.message + "), retrying");
    }).then(function () {
      inFlight = false;
      schedule();
    });
  }

  // --------------------------------------------------------------- times

  function pad(n, width) {
    var s = String(n);
    while (s.length < (width || 2)) { s = "0" + s; }
    return s;
  }

  function localize(root) {
    var zone = load("tz", "utc");
    var nodes = root.querySelectorAll("time.abs[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var iso = node.getAttribute("datetime");
      var when = new Date(iso);
      if (isNaN(when.getTime())) { continue; }
      if (!node.hasAttribute("data-utc")) { node.setAttribute("data-utc", node.textContent); }
      if (zone === "local") {
        node.textContent = when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate()) +
          " " + pad(when.getHours()) + ":" + pad(when.getMinutes()) + ":" + pad(when.getSeconds()) +
          "." + pad(when.getMilliseconds(), 3);
        node.title = node.getAttribute("data-utc");
      } else {
        node.textContent = node.getAttribute("data-utc");
        node.removeAttribute("title");
      }
    }
    if (tzButton) { tzButton.textContent = zone === "local" ? "local time" : "UTC"; }
  }

  // ------------------------------------------------------------ set up

  if (controls) { controls.hidden = false; }
  if (select) {
    select.value = load("refresh." + page, pageDefault);
    if (!select.value) { select.value = pageDefault; }
    select.addEventListener("change", function () {
      save("refresh." + page, select.value);
      say(seconds() ? "every " + seconds() + " s" : "live updates off");
      schedule();
    });
  }
  if (tzButton) {
    tzButton.addEventListener("click", function () {
      save("tz", load("tz", "utc") === "local" ? "utc" : "local");
      localize(document);
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      window.clearTimeout(timer);
      timer = null;
      say("paused while hidden");
    } else if (seconds() > 0) {
      refresh();
    }
  });
  // "Choose every job on this page" (delegated: live regions are replaced).
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box || !box.hasAttribute || !box.hasAttribute("data-select-all")) { return; }
    var table = box.closest("table");
    var boxes = table ? table.querySelectorAll("tbody input[type=checkbox]") : [];
    for (var i = 0; i < boxes.length; i++) { boxes[i].checked = box.checked; }
  });

  localize(document);
  if (document.querySelector("[data-live]")) {
    say(seconds() ? "every " + seconds() + " s" : "live updates off");
    schedule();
  }
}());
