// pinfold dashboard: live updates only. The pages work without this file;
// it follows a running job's log (a WebSocket), refreshes the jobs
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
    if (!l.c) row.id = "L" + l.n; // a piece of a long line has no anchor
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

  // Fetches this page again and swaps in the fresh copies of `selectors`
  // (the server renders them; DOMParser runs no script of the copy).
  function refresh(selectors) {
    return fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        selectors.forEach(function (sel) {
          var now = document.querySelector(sel);
          var fresh = doc.querySelector(sel);
          if (now && fresh) now.replaceWith(document.importNode(fresh, true));
        });
      });
  }

  function append(pre, lines) {
    var box = pre.querySelector("details.step:last-of-type > div.sec") || pre;
    lines.forEach(function (l) {
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
  }

  // Rows a followed log keeps: a job can print millions of lines, and a
  // page that kept them all would stop the browser.
  var MAX_ROWS = 20000;

  function trim(pre, rows) {
    var drop = rows - Math.floor(MAX_ROWS * 0.9);
    var all = pre.querySelectorAll(".l");
    for (var i = 0; i < drop && i < all.length; i++) all[i].remove();
    pre.querySelectorAll("details.step").forEach(function (d) {
      if (!d.querySelector(".l")) d.remove();
    });
    if (!document.getElementById("trimmed")) {
      var note = document.createElement("p");
      note.id = "trimmed";
      note.className = "hint";
      note.textContent = "Earlier lines are no longer kept in this page: see the raw log, or reload and page back.";
      pre.parentNode.insertBefore(note, pre);
    }
    return rows - drop;
  }

  // Follows the log over a WebSocket (ui/live.rs says why not EventSource),
  // reconnecting from the last position after a drop.
  function followLog(pre) {
    var follow = !location.hash;
    var status = document.getElementById("livestate");
    var size = document.querySelector(".logbar .size");
    var ended = false;
    var retry = 250;
    var rows = pre.querySelectorAll(".l").length;
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    window.addEventListener("scroll", function () { follow = atBottom(); }, { passive: true });
    function connect() {
      var proto = location.protocol === "https:" ? "wss:" : "ws:";
      var ws = new WebSocket(proto + "//" + location.host + pre.dataset.live +
        "?from=" + encodeURIComponent(pre.dataset.next));
      ws.onopen = function () {
        retry = 250;
        if (status) status.textContent = "Following the log live.";
      };
      ws.onmessage = function (ev) {
        var m = JSON.parse(ev.data);
        if (m.end) {
          ended = true;
          if (status) status.textContent = "The job ended: " + m.end.replace("_", " ") + ".";
          refresh(["main h1", "#summary", "#steps", "#artifacts", "#provenance", "#verify"])
            .then(function () {
              var c = document.getElementById("cancel");
              if (c) c.closest("form").remove();
            })
            .catch(function () {});
          return;
        }
        var stick = follow;
        append(pre, m.lines);
        rows += m.lines.length;
        if (rows > MAX_ROWS) rows = trim(pre, rows);
        pre.dataset.next = m.at;
        if (size) size.textContent = human(Number(m.at.split(":")[0]));
        if (stick) window.scrollTo(0, document.documentElement.scrollHeight);
      };
      ws.onclose = function () {
        if (ended) return;
        if (status) status.textContent = "Reconnecting…";
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }
    connect();
  }

  function liveTable(table) {
    var every = Number(table.dataset.live) || 5000;
    setInterval(function () {
      if (document.hidden) return;
      // The pager pages from the last row shown: keep it in step.
      refresh(["#" + table.id + " tbody", "nav.pager"]).catch(function () {});
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("logview");
    if (pre && pre.dataset.live) followLog(pre);
    else if (pre && !location.hash && !document.querySelector("form[role=search] input[value]")) {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
    document.querySelectorAll("table[data-live]").forEach(liveTable);
  });
})();
