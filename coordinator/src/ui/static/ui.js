// pinfold dashboard: live updates only. The pages work without this file;
// it follows a running job's log (server-sent events), refreshes the jobs
// list, and keeps the log scrolled to the end until the reader scrolls up.
// Served from /ui/static/ui.js under a CSP that forbids inline script.
// Log lines arrive as server-rendered, escaped HTML (colour spans only).
"use strict";

(function () {
  function atBottom() {
    var el = document.scrollingElement || document.documentElement;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  }

  function human(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function lineEl(l) {
    var row = document.createElement("span");
    row.className = "l";
    row.id = "L" + l.n;
    var a = document.createElement("a");
    a.className = "n";
    a.href = "?at=" + l.o + "#L" + l.n;
    a.setAttribute("aria-label", "line " + l.n);
    a.textContent = String(l.n);
    var t = document.createElement("span");
    t.className = "t";
    t.innerHTML = l.h; // escaped by the server (ui/log.rs)
    row.appendChild(a);
    row.appendChild(t);
    return row;
  }

  function refresh(ids) {
    return fetch(location.pathname, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var fresh = doc.getElementById(id);
          if (now && fresh) now.replaceWith(document.importNode(fresh, true));
        });
        var h1 = document.querySelector("main h1");
        var h1new = doc.querySelector("main h1");
        if (h1 && h1new) h1.replaceWith(document.importNode(h1new, true));
      });
  }

  function followLog(pre) {
    var url = pre.dataset.events + "?from=" + encodeURIComponent(pre.dataset.next);
    var follow = !location.hash;
    var status = document.getElementById("livestate");
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    window.addEventListener("scroll", function () { follow = atBottom(); }, { passive: true });
    var es = new EventSource(url, { withCredentials: true });
    es.onmessage = function (ev) {
      var stick = follow;
      var box = pre.querySelector("details.step:last-of-type > div.sec") || pre;
      JSON.parse(ev.data).forEach(function (l) {
        if (l.s) {
          var d = document.createElement("details");
          d.className = "step";
          d.open = true;
          var sm = document.createElement("summary");
          sm.textContent = l.s;
          box = document.createElement("div");
          box.className = "sec";
          d.appendChild(sm);
          d.appendChild(box);
          pre.appendChild(d);
        }
        box.appendChild(lineEl(l));
      });
      pre.dataset.next = ev.lastEventId;
      var size = document.querySelector(".logbar .size");
      if (size) size.textContent = human(Number(ev.lastEventId.split(":")[0]));
      if (stick) window.scrollTo(0, document.documentElement.scrollHeight);
    };
    es.addEventListener("end", function (ev) {
      es.close();
      if (status) status.textContent = "The job ended: " + ev.data.replace("_", " ") + ".";
      refresh(["summary", "steps", "artifacts", "provenance", "verify"]).then(function () {
        var c = document.getElementById("cancel");
        if (c) c.closest("form").remove();
      });
    });
    es.onerror = function () {
      if (status) status.textContent = "Reconnecting…";
    };
    es.onopen = function () {
      if (status) status.textContent = "Following the log live.";
    };
  }

  function liveTable(table) {
    var every = Number(table.dataset.live) || 5000;
    setInterval(function () {
      if (document.hidden) return;
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector("#" + table.id + " tbody");
          var now = table.querySelector("tbody");
          if (fresh && now) now.replaceWith(document.importNode(fresh, true));
        })
        .catch(function () {});
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("logview");
    if (pre && pre.dataset.events) followLog(pre);
    else if (pre && !location.hash && !document.querySelector("form[role=search] input[value]")) {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
    document.querySelectorAll("table[data-live]").forEach(liveTable);
  });
})();
