/* The run table of reports/site/index.html: filters, sorting and pages over the inline JSON
   (<script id="aifb-runs">), drawn PAGE rows at a time so that 10,000 runs stay quick. The
   state lives in the address's #fragment (category=..&status=..&sort=..&page=..), so a
   filtered view can be bookmarked or linked. No library. */
(function () {
  "use strict";
  var t0 = performance.now();
  var data = JSON.parse(document.getElementById("aifb-runs").textContent);
  var cols = data.columns, runs = data.runs;
  var PAGE = 100;
  var CHOICES = ["category", "service", "status", "sweep"];
  var state = { q: "", from: "", to: "", sort: "id", desc: true, page: 0 };
  CHOICES.forEach(function (k) { state[k] = ""; });
  var $ = function (id) { return document.getElementById(id); };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    Object.keys(state).forEach(function (k) {
      if (!p.has(k)) return;
      var v = p.get(k);
      state[k] = k === "page" ? Math.max(0, parseInt(v, 10) || 0) : k === "desc" ? v === "1" : v;
    });
  }

  function writeHash() {
    var p = new URLSearchParams();
    Object.keys(state).forEach(function (k) {
      var v = state[k];
      if (k === "desc") v = v ? "1" : "0";
      if (v !== "" && !(k === "page" && v === 0)) p.set(k, v);
    });
    try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* some file:// */ }
  }

  function fillChoices() {
    CHOICES.forEach(function (k) {
      var counts = {};
      runs.forEach(function (r) { var v = r[k]; if (v) counts[v] = (counts[v] || 0) + 1; });
      if (state[k] && !counts[state[k]]) counts[state[k]] = 0;   // asked for by the address
      var sel = $("f-" + k);
      Object.keys(counts).sort().forEach(function (v) {
        var o = document.createElement("option");
        o.value = v; o.textContent = v + " (" + counts[v] + ")";
        sel.appendChild(o);
      });
      sel.value = state[k];
      sel.addEventListener("change", function () { state[k] = sel.value; state.page = 0; render(); });
    });
    [["q", "input"], ["from", "change"], ["to", "change"]].forEach(function (p) {
      var el = $("f-" + p[0]);
      el.value = state[p[0]];
      el.addEventListener(p[1], function () { state[p[0]] = el.value; state.page = 0; render(); });
    });
    $("f-reset").addEventListener("click", function () {
      CHOICES.concat(["q", "from", "to"]).forEach(function (k) { state[k] = ""; $("f-" + k).value = ""; });
      state.page = 0; render();
    });
  }

  function matches(r) {
    for (var i = 0; i < CHOICES.length; i++) {
      var k = CHOICES[i];
      if (state[k] && r[k] !== state[k]) return false;
    }
    if (state.from && !(r.date >= state.from)) return false;
    if (state.to && !(r.date <= state.to)) return false;
    if (state.q) {
      var q = state.q.toLowerCase();
      if ((r.id + " " + r.recipe + " " + r.notes).toLowerCase().indexOf(q) < 0) return false;
    }
    return true;
  }

  function compare(a, b) {
    var k = state.sort, x = a[k], y = b[k];
    var nx = x === null || x === undefined || x === "", ny = y === null || y === undefined || y === "";
    if (nx || ny) return nx === ny ? 0 : nx ? 1 : -1;   // empty cells last, either direction
    var c = x < y ? -1 : x > y ? 1 : 0;
    return state.desc ? -c : c;
  }

  function cell(r, c) {
    var v = r[c.key], shown = r[c.key + "_t"] !== undefined ? r[c.key + "_t"] : v;
    if (shown === null || shown === undefined || shown === "") return '<td class="muted">—</td>';
    var cls = c.num ? ' class="num"' : "";
    if (c.key === "id") return '<td><a href="' + esc(r.page) + '">' + esc(v) + "</a></td>";
    if (c.key === "status") return '<td class="status-' + esc(v) + '">' + esc(v) + "</td>";
    if (c.key === "slo") return '<td class="slo-' + esc(v) + '">' + esc(shown) + "</td>";
    if (c.key === "sweep" && r.sweep_page)
      return '<td><a href="' + esc(r.sweep_page) + '">' + esc(shown) + "</a></td>";
    if (c.key === "report") return '<td><a href="' + esc(v) + '">report</a></td>';
    return "<td" + cls + ' title="' + esc(shown) + '">' + esc(shown) + "</td>";
  }

  function syncControls() {   // the address may have changed the state (hashchange)
    CHOICES.concat(["q", "from", "to"]).forEach(function (k) {
      var el = $("f-" + k);
      if (el.value !== state[k]) el.value = state[k];
    });
  }

  function render() {
    syncControls();
    var rows = runs.filter(matches).sort(compare);
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var slice = rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    $("runs-body").innerHTML = slice.map(function (r) {
      return "<tr>" + cols.map(function (c) { return cell(r, c); }).join("") + "</tr>";
    }).join("");
    document.querySelectorAll("#runs th").forEach(function (th) {
      th.classList.toggle("sorted-asc", th.dataset.key === state.sort && !state.desc);
      th.classList.toggle("sorted-desc", th.dataset.key === state.sort && state.desc);
    });
    $("page-info").textContent = rows.length
      ? "runs " + (state.page * PAGE + 1) + "–" + (state.page * PAGE + slice.length) + " of " +
        rows.length + " matching (" + runs.length + " in all), page " + (state.page + 1) + " of " + pages
      : "no run matches (" + runs.length + " in all)";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    document.body.dataset.matched = String(rows.length);
    document.body.dataset.shown = String(slice.length);
    writeHash();
  }

  function header() {
    $("runs-head").innerHTML = "<tr>" + cols.map(function (c) {
      return '<th class="sortable" data-key="' + esc(c.key) + '" title="sort by ' + esc(c.label) +
        '">' + esc(c.label) + "</th>";
    }).join("") + "</tr>";
    document.querySelectorAll("#runs th").forEach(function (th) {
      th.addEventListener("click", function () {
        if (state.sort === th.dataset.key) state.desc = !state.desc;
        else { state.sort = th.dataset.key; state.desc = false; }
        render();
      });
    });
    $("prev").addEventListener("click", function () { state.page -= 1; render(); });
    $("next").addEventListener("click", function () { state.page += 1; render(); });
  }

  readHash();
  header();
  fillChoices();
  render();
  window.addEventListener("hashchange", function () { readHash(); render(); });
  // For the browser test's load-time figure: this script's own time, and the time since the
  // navigation started (HTML with the inline data parsed, table drawn).
  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  document.body.dataset.readyMs = performance.now().toFixed(1);
})();
