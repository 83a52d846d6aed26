// strongroom dashboard charts, drawn with the vendored uPlot (vendor/uplot/).
//
// Each target card has <div class="charts" data-history="/api/targets/NAME/history"
// data-tz="Europe/Berlin"> with one <figure class="chart" data-chart="size|duration|runs">
// per chart. The history JSON (GET, viewer role) gives the points; times on the x axis
// and in the legend are in data-tz. The legend under each chart shows the values at the
// cursor, and the newest point's values while the pointer is elsewhere.
//
// Live update: the job box's last response carries HX-Trigger: strongroom:job-done; the
// cards and the backup list reload on it (hx-trigger="strongroom:job-done from:body").
// This file relays that event to the other tabs of the same browser (BroadcastChannel),
// so a backup started in one tab shows in /backups open in another.
(function () {
  "use strict";

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  var BLUE = "#2563eb";
  var GREEN = "#16a34a";
  var RED = "#dc2626";
  var AMBER = "#d97706";
  var GRID = "#e5e7eb";
  var HEIGHT = 170;
  var EVENT = "strongroom:job-done";

  function power(max) {
    var i = 0;
    while (max >= 1024 && i < UNITS.length - 1) {
      max /= 1024;
      i += 1;
    }
    return i;
  }

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    var i = power(Math.abs(value));
    return i === 0 ? Math.round(value) + " B" : (value / Math.pow(1024, i)).toFixed(1) + " " + UNITS[i];
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return value.toFixed(2) + " s";
    if (value < 60) return value.toFixed(1) + " s";
    if (value < 3600) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  // the unit a chart's y axis is drawn in: [divisor, unit name] for the largest value
  function byteScale(max) {
    var i = power(max);
    return [Math.pow(1024, i), UNITS[i]];
  }

  function timeScale(max) {
    if (max < 120) return [1, "s"];
    if (max < 7200) return [60, "min"];
    return [3600, "h"];
  }

  // tick labels with as many decimals as the tick spacing needs
  function ticks(u, splits) {
    var step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
    var decimals = 0;
    while (decimals < 6 && Math.abs(step * Math.pow(10, decimals) - Math.round(step * Math.pow(10, decimals))) > 1e-6) {
      decimals += 1;
    }
    return splits.map(function (v) { return v.toFixed(decimals); });
  }

  // time axis labels in the configured zone; two lines when the span is short
  function timeTicks(tz) {
    var day = uPlot.fmtDate("{YYYY}-{MM}-{DD}");
    var clock = uPlot.fmtDate("{HH}:{mm}");
    var precise = uPlot.fmtDate("{HH}:{mm}:{ss}");
    return function (u, splits) {
      var span = u.scales.x.max - u.scales.x.min;
      var shownDay = null;
      return splits.map(function (ts) {
        var date = uPlot.tzDate(new Date(ts * 1e3), tz);
        if (span > 3 * 86400) return day(date);
        var time = span < 600 ? precise(date) : clock(date);
        if (day(date) === shownDay) return time;
        shownDay = day(date); // the date under the first tick and where the day changes
        return time + "\n" + shownDay;
      });
    };
  }

  // the time range of the points with a margin (one point: an hour either side); uPlot's
  // own range for a single time stamp spans years
  function xRange(u) {
    var xs = u.data[0];
    if (!xs || xs.length === 0) return [0, 1];
    var min = xs[0];
    var max = xs[xs.length - 1];
    var pad = max > min ? Math.max((max - min) * 0.06, 1) : 3600;
    return [min - pad, max + pad];
  }

  function yFromZero(u, min, max) {
    return [0, max > 0 ? max * 1.15 : 1];
  }

  function axisStyle(extra) {
    var axis = { stroke: "#374151", grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID } };
    for (var key in extra) axis[key] = extra[key];
    return axis;
  }

  // dots while they can be told apart; filled, so a single backup is a visible dot
  function pointsShown(count, colour) {
    return { show: count <= 60, size: count === 1 ? 10 : 6, fill: colour, stroke: colour };
  }

  // values drawn in the axis unit (nice ticks); the legend shows each point's exact value
  function exact(points, field, format) {
    return function (u, v, s, idx) {
      return idx === null || idx === undefined || !points[idx] ? "–" : format(points[idx][field]);
    };
  }

  function sizeChart(data, tz) {
    var b = data.backups;
    var scale = byteScale(Math.max.apply(null, b.map(function (p) { return p.stored_cumulative_bytes; })));
    return {
      unit: scale[1],
      data: [
        b.map(function (p) { return p.at; }),
        b.map(function (p) { return p.stored_new_bytes / scale[0]; }),
        b.map(function (p) { return p.stored_cumulative_bytes / scale[0]; }),
      ],
      series: [
        { label: "backup of", value: timeValue(tz) },
        {
          label: "new in this backup",
          stroke: AMBER,
          fill: "rgba(217, 119, 6, .35)",
          paths: uPlot.paths.bars({ size: [0.5, 36] }),
          points: { show: false },
          value: exact(b, "stored_new_bytes", bytes),
        },
        {
          label: "cumulative",
          stroke: BLUE,
          width: 2,
          points: pointsShown(b.length, BLUE),
          value: exact(b, "stored_cumulative_bytes", bytes),
        },
      ],
      axes: [axisStyle({ values: timeTicks(tz), space: 90 }), axisStyle({ values: ticks, size: 50 })],
      yRange: yFromZero,
    };
  }

  function durationChart(data, tz) {
    var b = data.backups;
    var scale = timeScale(Math.max.apply(null, b.map(function (p) { return p.duration_seconds; })));
    return {
      unit: scale[1],
      data: [
        b.map(function (p) { return p.at; }),
        b.map(function (p) { return p.duration_seconds / scale[0]; }),
      ],
      series: [
        { label: "backup of", value: timeValue(tz) },
        {
          label: "duration",
          stroke: GREEN,
          width: 2,
          points: pointsShown(b.length, GREEN),
          value: exact(b, "duration_seconds", seconds),
        },
      ],
      axes: [axisStyle({ values: timeTicks(tz), space: 90 }), axisStyle({ values: ticks, size: 50 })],
      yRange: yFromZero,
    };
  }

  function runsChart(data, tz) {
    var runs = data.runs;
    function outcome(ok) {
      return function (u, v, s, idx) {
        if (v === null || v === undefined || idx === null || idx === undefined) return "–";
        var run = runs[idx];
        if (ok) return "yes" + (run.backup_id ? " (" + run.backup_id + ")" : "");
        return "yes (" + (run.error_kind || "error") + ")";
      };
    }
    return {
      unit: null,
      data: [
        runs.map(function (r) { return r.at; }),
        runs.map(function (r) { return r.ok ? 1 : null; }),
        runs.map(function (r) { return r.ok ? null : 0; }),
      ],
      series: [
        { label: "run of", value: timeValue(tz) },
        { label: "succeeded", stroke: GREEN, fill: GREEN, paths: noPath, points: { show: true, size: 9, fill: GREEN }, value: outcome(true) },
        { label: "failed", stroke: RED, fill: RED, paths: noPath, points: { show: true, size: 9, fill: RED }, value: outcome(false) },
      ],
      axes: [
        axisStyle({ values: timeTicks(tz), space: 90 }),
        axisStyle({
          size: 92,
          splits: function () { return [0, 1]; },
          values: function (u, splits) {
            return splits.map(function (v) { return v === 1 ? "succeeded" : v === 0 ? "failed" : ""; });
          },
        }),
      ],
      yRange: function () { return [-0.6, 1.6]; },
    };
  }

  function noPath() {
    return null;
  }

  function timeValue(tz) {
    var format = uPlot.fmtDate("{YYYY}-{MM}-{DD} {HH}:{mm}");
    return function (u, ts) {
      return ts === null || ts === undefined ? "–" : format(uPlot.tzDate(new Date(ts * 1e3), tz)) + " " + tz;
    };
  }

  var BUILDERS = { size: sizeChart, duration: durationChart, runs: runsChart };

  function lengthOf(kind, data) {
    return kind === "runs" ? data.runs.length : data.backups.length;
  }

  // the newest point's values in the legend while the pointer is not over the chart
  function showNewest(u) {
    if (u.cursor.idx === null || u.cursor.idx === undefined) {
      var n = u.data[0].length;
      if (n > 0) u.setLegend({ idx: n - 1 }, false);
    }
  }

  function draw(figure, data, tz) {
    var kind = figure.dataset.chart;
    var plot = figure.querySelector(".chart-plot");
    if (!plot || !BUILDERS[kind]) return;
    plot.textContent = "";
    if (lengthOf(kind, data) === 0) {
      var empty = document.createElement("p");
      empty.className = "chart-empty muted";
      empty.textContent = plot.dataset.empty || "No data yet.";
      plot.appendChild(empty);
      var y = figure.querySelector(".chart-y");
      var x = figure.querySelector(".chart-x");
      if (y) y.hidden = true;
      if (x) x.hidden = true;
      return;
    }
    var spec = BUILDERS[kind](data, tz);
    var label = figure.querySelector(".chart-y");
    if (label && spec.unit) label.textContent = label.dataset.label + " (" + spec.unit + ")";
    var opts = {
      width: Math.max(200, plot.clientWidth || figure.clientWidth || 280),
      height: HEIGHT,
      padding: [12, 28, 0, 4], // room for the last time label and the top tick
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); },
      scales: { x: { time: true, range: xRange }, y: { range: spec.yRange } },
      series: spec.series,
      axes: spec.axes,
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 10 } },
      hooks: { ready: [showNewest], setCursor: [showNewest] },
    };
    var chart = new uPlot(opts, spec.data, plot);
    plot.uplot = chart;
    var legend = chart.root.querySelector(".u-legend");
    var xLabel = figure.querySelector(".chart-x");
    if (legend && xLabel) chart.root.insertBefore(xLabel, legend); // under the axis it names
    figure.dataset.ready = "true";
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        var width = Math.max(200, plot.clientWidth);
        if (Math.abs(width - chart.width) > 2) chart.setSize({ width: width, height: HEIGHT });
      }).observe(plot);
    }
  }

  function fail(box, message) {
    box.querySelectorAll(".chart-plot").forEach(function (plot) {
      plot.textContent = "";
      var p = document.createElement("p");
      p.className = "chart-empty bad";
      p.textContent = message;
      plot.appendChild(p);
    });
  }

  function load(box) {
    if (box.dataset.loaded) return;
    box.dataset.loaded = "true";
    if (!box.querySelector(".chart-plot")) return; // no backups and no chart to draw
    if (typeof uPlot === "undefined") {
      fail(box, "The chart library did not load.");
      return;
    }
    fetch(box.dataset.history, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("the history could not be read (" + response.status + ")");
        return response.json();
      })
      .then(function (data) {
        var tz = box.dataset.tz || data.timezone || "UTC";
        box.querySelectorAll("figure.chart").forEach(function (figure) { draw(figure, data, tz); });
        box.dataset.drawn = "true";
      })
      .catch(function (error) { fail(box, "Charts unavailable: " + error.message); });
  }

  function scan(root) {
    if (!root || !root.querySelectorAll) return;
    if (root.matches && root.matches(".charts[data-history]")) load(root);
    root.querySelectorAll(".charts[data-history]").forEach(load);
  }

  // tell the other tabs of this browser that a job ended; replay theirs here
  var channel = window.BroadcastChannel ? new BroadcastChannel("strongroom") : null;
  if (channel) {
    channel.onmessage = function (message) {
      if (message.data && message.data.type === EVENT) {
        document.body.dispatchEvent(new CustomEvent(EVENT, { detail: { relayed: true } }));
      }
    };
  }
  document.addEventListener(EVENT, function (event) {
    if (channel && !(event.detail && event.detail.relayed)) channel.postMessage({ type: EVENT });
  });

  document.addEventListener("htmx:load", function (event) { scan(event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { scan(document.body); });
})();
