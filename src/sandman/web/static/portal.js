// The portal's own script: countdowns, copy buttons, confirmations and charts.
// Loaded from /ui/static (the content security policy allows no inline script).
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function format(seconds) {
    if (seconds <= 0) return "ended";
    var s = Math.floor(seconds);
    if (s >= 86400) return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
    if (s >= 3600) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
  }

  // Every element with data-until (an ISO time) counts down to it, once a second.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-until]").forEach(function (el) {
      var until = Date.parse(el.getAttribute("data-until"));
      if (!isNaN(until)) el.textContent = format((until - now) / 1000);
    });
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    copyText(source.textContent.trim()).then(function () {
      var note = button.parentElement.querySelector(".copied");
      if (note) note.textContent = "copied";
      button.setAttribute("data-copied", "true");
    });
  });

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // -- charts (uPlot) ----------------------------------------------------------------
  var COLOURS = ["#2757c9", "#dc6803", "#067647", "#b42318", "#6938ef", "#0e9384", "#c11574"];

  function draw(el, label, x, series) {
    if (typeof uPlot === "undefined") return;
    el.innerHTML = "";
    var width = Math.max(el.clientWidth || 320, 240);
    var opts = {
      title: label, width: width, height: 170,
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: COLOURS[i % COLOURS.length], width: 1.5 };
      })),
      axes: [{}, { size: 50 }],
    };
    new uPlot(opts, [x].concat(series.map(function (s) { return s.values; })), el);
  }

  function sessionCharts(box) {
    var url = box.getAttribute("data-metrics");
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (history) {
      if (!history) return;
      var points = history.points || [];
      var empty = box.parentElement.querySelector(".charts-empty");
      if (empty) empty.hidden = points.length > 0;
      var x = points.map(function (p) { return Date.parse(p.minute) / 1000; });
      box.querySelectorAll(".chart").forEach(function (el) {
        var name = el.getAttribute("data-series");
        var scale = parseFloat(el.getAttribute("data-scale") || "1");
        var values = points.map(function (p) { return p[name] == null ? null : p[name] * scale; });
        draw(el, el.getAttribute("data-label"), x, [{ label: name, values: values }]);
      });
    }).catch(function () { /* the next refresh tries again */ });
  }

  function staticCharts() {
    document.querySelectorAll(".chart[data-from]").forEach(function (el) {
      var source = document.querySelector(el.getAttribute("data-from"));
      if (!source) return;
      var data = JSON.parse(source.textContent);
      if (data.x.length) draw(el, el.getAttribute("data-label"), data.x, data.series);
      else el.textContent = "No cost recorded this month yet.";
    });
  }

  function start() {
    tick();
    setInterval(tick, 1000);
    staticCharts();
    document.querySelectorAll(".charts[data-metrics]").forEach(function (box) {
      sessionCharts(box);
      setInterval(function () { sessionCharts(box); }, 60000);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  document.addEventListener("htmx:afterSwap", tick);
})();
