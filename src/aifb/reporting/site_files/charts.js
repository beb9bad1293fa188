/* Draws every .chart element of a site page with vega-embed (assets/vega.js, loaded before).
   A chart's Vega-Lite spec is either inline (data-spec: the id of a JSON <script>) or loaded by
   a <script src> beside the report's PNG (data-chart: its key in window.aifbCharts), because a
   page opened from file:// may not use fetch on local files. The editor/source actions are off: they would
   open the online Vega editor. */
(function () {
  "use strict";
  var actions = { export: true, source: false, compiled: false, editor: false };
  var pending = [];
  document.querySelectorAll(".chart").forEach(function (el) {
    var spec = el.dataset.spec
      ? JSON.parse(document.getElementById(el.dataset.spec).textContent)
      : (window.aifbCharts || {})[el.dataset.chart];
    if (!spec) {
      el.textContent = "chart data missing: " + (el.dataset.chart || el.dataset.spec);
      el.classList.add("missing");
      return;
    }
    var opts = { actions: actions, renderer: el.dataset.renderer || "svg" };
    pending.push(window.vegaEmbed(el, spec, opts).catch(function (err) {
      el.textContent = "chart failed: " + err;
      el.classList.add("missing");
      console.error("aifb chart", err);
    }));
  });
  Promise.all(pending).then(function () {
    document.body.dataset.chartsDrawn = String(document.querySelectorAll(".chart.vega-embed canvas, .chart.vega-embed svg.marks").length);
  });
})();
