/* exalate-node activity charts: fetch the series (/ui/activity/data/) and draw them with uPlot (vendored);
   refetch every 10 s while the tab is visible. */
(function () {
  "use strict";

  function ms(v) {
    if (v === null || v === undefined) { return "–"; }
    return v >= 1000 ? "≤ " + (v / 1000) + " s" : "≤ " + v + " ms";
  }

  function width(el) { return Math.max(280, el.clientWidth); }

  function charts(root) {
    var drawn = {};
    var styles = getComputedStyle(document.documentElement);
    var ink = styles.getPropertyValue("--body-quiet-color").trim() || "#666";
    var grid = styles.getPropertyValue("--hairline-color").trim() || "#ddd";
    var axis = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    var spec = {
      events: { series: [{ label: "Outgoing", stroke: "#417690", fill: "rgba(65,118,144,.15)" },
                         { label: "Incoming", stroke: "#1e7d3a", fill: "rgba(30,125,58,.12)" }],
                data: function (d) { return [d.x, d.outgoing, d.incoming]; }, unit: "" },
      latency: { series: [{ label: "p50", stroke: "#417690", points: { show: true, size: 6 } },
                          { label: "p95", stroke: "#b45309", dash: [6, 4], points: { show: true, size: 6 } }],
                 data: function (d) { return [d.x, d.p50, d.p95]; }, unit: " ms" },
      failed: { series: [{ label: "Failed", stroke: "#b42318", fill: "rgba(180,35,24,.12)" }],
                data: function (d) { return [d.x, d.failed]; }, unit: "" }
    };

    function draw(data) {
      Object.keys(spec).forEach(function (name) {
        var el = root.querySelector('[data-chart="' + name + '"]');
        if (!el) { return; }
        var s = spec[name], rows = s.data(data);
        if (drawn[name]) { drawn[name].setData(rows); return; }
        drawn[name] = new uPlot({
          width: width(el), height: 220,
          series: [{}].concat(s.series.map(function (x) {
            return Object.assign({ width: 2, spanGaps: name !== "latency", points: { show: false },
                                   value: function (u, v) { return v === null ? "–" : v + s.unit; } }, x);
          })),
          axes: [Object.assign({}, axis), Object.assign({ size: 72, values: function (u, vals) {
            return vals.map(function (v) { return v + s.unit; }); } }, axis)],
          scales: { y: { range: function (u, min, max) { return [0, Math.max(max || 0, name === "latency" ? 100 : 1)]; } } }
        }, rows, el);
      });
    }

    function table(data) {
      var body = root.querySelector("[data-connections]");
      body.textContent = "";
      if (!data.connections.length) {
        var tr = body.insertRow(), td = tr.insertCell();
        td.colSpan = 5; td.className = "empty";
        td.textContent = "No sync activity in this range.";
        return;
      }
      data.connections.forEach(function (c) {
        var tr = body.insertRow();
        var link = document.createElement("a");
        link.href = "?range=" + encodeURIComponent(data.range) + "&connection=" + c.id;
        link.textContent = c.name;
        var cell = tr.insertCell();
        cell.appendChild(link);
        var side = document.createElement("div");
        side.className = "muted small";
        side.textContent = c.side;
        cell.appendChild(side);
        [c.events, c.failed, ms(c.p50), ms(c.p95)].forEach(function (v) {
          var td = tr.insertCell(); td.className = "num"; td.textContent = v;
        });
      });
    }

    function totals(data) {
      var t = data.totals;
      var text = { events: t.events, failed: t.failed, p50: ms(t.p50), p95: ms(t.p95) };
      root.querySelectorAll("[data-total]").forEach(function (el) { el.textContent = text[el.dataset.total]; });
    }

    var timer = null;
    function load() {
      window.clearTimeout(timer);
      fetch(root.dataset.url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          totals(data); table(data); draw(data);
          root.dataset.loaded = String(Number(root.dataset.loaded || 0) + 1);  // tests wait on it
        })
        .catch(function () {
          var note = root.querySelector(".activity-note");
          if (note) { note.textContent = "The charts could not be loaded; reload the page to try again."; }
        })
        .then(function () { if (!document.hidden) { timer = window.setTimeout(load, 10000); } });
    }
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { load(); } });
    window.addEventListener("resize", function () {
      Object.keys(drawn).forEach(function (name) {
        var el = root.querySelector('[data-chart="' + name + '"]');
        drawn[name].setSize({ width: width(el), height: 220 });
      });
    });
    load();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("activity");
    if (root && window.uPlot) { charts(root); }
  });
})();
