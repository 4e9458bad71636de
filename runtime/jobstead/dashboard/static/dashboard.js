// Live pages: the server says something changed (server-sent events), and the
// page re-fetches itself and swaps in the fresh [data-live] sections. At most
// one refresh a second, none while the tab is hidden (the stream is closed),
// none while the user is selecting jobs or typing in a form. Pages work
// without this file; it only saves the reload.
(function () {
  "use strict";
  // Running for: the server's elapsed time at render, counted on by this tab's clock
  // (not the machine's wall clock, which may disagree with the database's).
  var rendered = Date.now();
  function duration(seconds) {
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }
  function tick() {
    document.querySelectorAll("[data-elapsed][data-offset]").forEach(function (cell) {
      var since = Number(cell.getAttribute("data-rendered") || rendered);
      cell.textContent = duration(Number(cell.getAttribute("data-offset")) + (Date.now() - since) / 1000);
    });
  }
  document.addEventListener("jobstead:refreshed", function () {
    var now = String(Date.now());
    document.querySelectorAll("[data-elapsed][data-offset]").forEach(function (cell) {
      if (!cell.hasAttribute("data-rendered")) cell.setAttribute("data-rendered", now);
    });
  });
  if (document.getElementById("running")) setInterval(tick, 1000);
})();

(function () {
  "use strict";
  var url = document.body.getAttribute("data-live-url");
  if (!url || !window.EventSource || !window.fetch) return;
  var MIN_INTERVAL = 1000;
  var source = null, timer = null, inflight = false, wanted = false, last = 0;
  var state = document.getElementById("live-state");

  function userIsBusy() {
    var el = document.activeElement;
    if (el && el.form && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) && el.type !== "checkbox") return true;
    return document.querySelector("input[name=ids]:checked") !== null;
  }

  function schedule(delay) {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, delay);
  }

  function refresh() {
    wanted = true;
    if (document.hidden || inflight) return;
    var wait = last + MIN_INTERVAL - Date.now();
    if (wait > 0) return schedule(wait);
    if (userIsBusy()) return schedule(MIN_INTERVAL);
    wanted = false;
    inflight = true;
    last = Date.now();
    fetch(location.href, { headers: { "X-Jobstead-Live": "1" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var next = old.id && fresh.getElementById(old.id);
          if (next) old.replaceWith(document.importNode(next, true));
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
        document.dispatchEvent(new Event("jobstead:refreshed"));
      })
      .catch(function () {})
      .then(function () { inflight = false; if (wanted) schedule(MIN_INTERVAL); });
  }

  function connect() {
    if (source) return;
    source = new EventSource(url);
    source.addEventListener("change", refresh);
    source.onopen = function () { if (state) state.textContent = "live"; };
    source.onerror = function () { if (state) state.textContent = "reconnecting"; };
  }

  function disconnect() {
    if (source) { source.close(); source = null; }
    if (state) state.textContent = "paused while hidden";
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { disconnect(); } else { connect(); refresh(); }
  });
  if (!document.hidden) connect();
  document.body.setAttribute("data-live-ready", "1");
})();
