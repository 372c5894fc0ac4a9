// The statistics page (统计): incidents by period and type, place, grid and station; response times as
// distributions; busiest channels and hours; per-unit participation (警保联动考核). Charts are Chart.js (vendored,
// static/vendor/chartjs); the figures come from GET /api/stats (dispatch/statistics.py computes them).
"use strict";

const S = { charts: {}, data: null };
const STAGES = { reported: "发现", alerted: "派警", acked: "响应", on_scene: "到场", resolved: "处置完毕" };
const PALETTE = ["#3fa7ff", "#ff4d4f", "#ffb020", "#3ccf7a", "#b37feb", "#36cfc9", "#ff85c0", "#ffd666", "#95de64",
  "#ff9c6e", "#69b1ff", "#d3adf7", "#87e8de", "#ffe58f", "#adc6ff", "#ffa39e"];

Chart.defaults.color = "#c9d6e3";
Chart.defaults.borderColor = "#2c3d51";
Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
Chart.defaults.animation = false;  // figures, not a show: drawn at once (and the same in every screenshot)
Chart.defaults.maintainAspectRatio = false;

// a type has the same colour in every chart
const typeColor = (type) => PALETTE[Math.max(0, Object.keys(JB.LABELS.type).indexOf(type)) % PALETTE.length];

const isoDay = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;

function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${Math.round(s)} 秒`;
  if (s < 3600) return `${(s / 60).toFixed(1)} 分`;
  return `${(s / 3600).toFixed(1)} 小时`;
}

async function main() {
  const me = await JB.session(["operator", "auditor"]);
  if (me.role === "auditor") Object.assign(document.getElementById("back"), { href: "/auditor", textContent: "返回检索与审计" });
  const form = document.getElementById("filters"), today = new Date();
  form.elements.to.value = isoDay(today);
  form.elements.from.value = isoDay(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6));
  document.getElementById("month").value = isoDay(today).slice(0, 7);
  document.getElementById("f-type").append(...Object.entries(JB.LABELS.type).map(([k, v]) => JB.el("option", { value: k }, v)));
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  document.getElementById("month").addEventListener("change", setReportLinks);
  document.getElementById("interval").addEventListener("change", drawResponse);
  document.getElementById("trend-by").addEventListener("change", drawTrend);
  setReportLinks();
  await load(true);
}

function params() {
  const out = new URLSearchParams();
  for (const [k, v] of new FormData(document.getElementById("filters"))) if (v) out.set(k, v);
  return out;
}

function setReportLinks() {
  const month = document.getElementById("month").value;
  document.getElementById("report-html").href = `/api/stats/report?month=${month}`;
  document.getElementById("report-pdf").href = `/api/stats/report.pdf?month=${month}`;
}

async function load(first = false) {
  const p = params(), error = document.getElementById("error");
  document.getElementById("csv-incidents").href = `/api/stats/incidents.csv?${p}`;
  document.getElementById("csv-units").href = `/api/stats/units.csv?${p}`;
  try { S.data = await JB.api(`/api/stats?${p}`); }
  catch (e) { error.textContent = `统计失败：${e.message}`; return; }
  error.textContent = "";
  if (first) fillOptions(S.data.options);
  render(S.data);
}

function fillOptions(options) {
  const add = (id, items) => document.getElementById(id).append(...items.map((o) => JB.el("option", { value: o.id }, o.name)));
  add("f-place", options.places);
  add("f-grid", options.grids);
  add("f-station", options.stations.map((s) => ({ id: s, name: s })));
  document.getElementById("station").textContent = options.heading;
  document.getElementById("interval").append(...Object.keys(S.data.response).map((k) => {
    const r = S.data.response[k];
    return JB.el("option", { value: k, selected: k === "reported-on_scene" }, `${STAGES[r.from]} → ${STAGES[r.to]}`);
  }));
}

function chart(id, config) {
  if (S.charts[id]) S.charts[id].destroy();
  S.charts[id] = new Chart(document.getElementById(id), config);
}

const bar = (labels, datasets, extra = {}) => ({ type: "bar", data: { labels, datasets },
  options: { plugins: { legend: { display: datasets.length > 1 } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }, ...extra } });

const horizontal = (rows, label, color) => bar(rows.map((r) => r.name), [{ label, data: rows.map((r) => r.count), backgroundColor: color }],
  { indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } });

function render(d) {
  const t = d.totals;
  document.getElementById("totals").replaceChildren(...[["警情总数", t.incidents], ["已处置", t.resolved], ["误报", t.false_alarms],
    ["未结", t.open], ["到场中位用时", duration(d.response["reported-on_scene"].p50)]]
    .map(([label, value]) => JB.el("div", { class: "figure" }, JB.el("b", {}, value), JB.el("span", {}, label))));

  document.getElementById("by-period-title").textContent = `警情趋势（${d.period === "week" ? "按周" : "按日"}）`;
  drawTrend();
  chart("chart-type", { type: "doughnut", data: { labels: d.by_type.map((r) => JB.label("type", r.id)),
    datasets: [{ data: d.by_type.map((r) => r.count), backgroundColor: d.by_type.map((r) => typeColor(r.id)), borderColor: "#17212d" }] },
    options: { plugins: { legend: { position: "right" } } } });
  chart("chart-place", horizontal(d.by_place.slice(0, 10), "起数", "#3fa7ff"));
  chart("chart-grid", horizontal(d.by_grid, "起数", "#36cfc9"));
  chart("chart-station", horizontal(d.by_station, "起数", "#b37feb"));
  drawResponse();
  document.getElementById("response-table").replaceChildren(...Object.values(d.response).map((r) =>
    JB.el("tr", {}, JB.el("td", {}, `${STAGES[r.from]} → ${STAGES[r.to]}`), JB.el("td", {}, r.n), JB.el("td", {}, duration(r.p50)),
      JB.el("td", {}, duration(r.p90)), JB.el("td", {}, duration(r.mean)))));
  chart("chart-channels", bar(d.channels.map((c) => c.name), [
    { label: "通话次数", data: d.channels.map((c) => c.utterances), backgroundColor: "#3fa7ff", yAxisID: "y" },
    { label: "报警起数", data: d.channels.map((c) => c.incidents), backgroundColor: "#ff4d4f", yAxisID: "y1" }],
    { scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "通话" } },
      y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, ticks: { precision: 0 }, title: { display: true, text: "警情" } } } }));
  const hours = [...Array(24).keys()].map((h) => `${h}时`);
  chart("chart-hours", { type: "bar", data: { labels: hours, datasets: [
    { type: "line", label: "报警起数", data: d.hours.incidents, borderColor: "#ff4d4f", backgroundColor: "#ff4d4f", yAxisID: "y1", tension: 0.3 },
    { label: "通话次数", data: d.hours.utterances, backgroundColor: "#3fa7ff", yAxisID: "y" }] },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "通话" } },
      y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, ticks: { precision: 0 }, title: { display: true, text: "警情" } } } } });
  document.getElementById("units").replaceChildren(...d.units.map((u) => JB.el("tr", { class: u.alerted ? null : "idle" },
    JB.el("td", {}, u.name), JB.el("td", {}, u.unit), JB.el("td", {}, JB.label("role", u.role)), JB.el("td", {}, u.alerted),
    JB.el("td", {}, u.answered), JB.el("td", {}, u.on_scene), JB.el("td", {}, u.declined), JB.el("td", {}, u.unanswered),
    JB.el("td", {}, duration(u.answer_p50_s)))));
}

// incidents per day or week, stacked by type, grid or station (the select beside the title)
function drawTrend() {
  const d = S.data, by = document.getElementById("trend-by").value, types = by === "types";
  chart("chart-period", bar(d.by_period.periods.map((p) => (d.period === "week" ? `${p} 起一周` : p.slice(5))),
    Object.entries(d.by_period[by]).map(([key, counts], i) => ({ label: types ? JB.label("type", key) : key, data: counts,
      backgroundColor: types ? typeColor(key) : PALETTE[i % PALETTE.length] })),
    { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }));
}

function drawResponse() {
  const r = S.data.response[document.getElementById("interval").value];
  const edges = r.histogram.edges_s, labels = edges.map((e, i) => (i + 1 < edges.length ? `${duration(e)}–${duration(edges[i + 1])}` : `≥${duration(e)}`));
  chart("chart-response", bar(labels, [{ label: "起数", data: r.histogram.counts, backgroundColor: "#ffb020" }],
    { plugins: { legend: { display: false }, title: { display: true, text: `${STAGES[r.from]} → ${STAGES[r.to]}：P50 ${duration(r.p50)}，P90 ${duration(r.p90)}（${r.n} 起）` } } }));
}

main();
