// The console's 轨迹回放 panel (track replay, GET /api/tracks/{responder}): where a guard or officer went over a time
// range, drawn on the console's map as a line with a marker that a time slider (or ▶ 回放) moves along it, beside the
// incidents open then and the radio transmissions heard then (▶ plays the archived recording; clicking a row moves
// the slider to its moment). The panel lies over the transcript feed so the map stays in view.
"use strict";

const TR = { data: null, layer: null, marker: null, timer: null };
const REPLAY_SECONDS = 20;  // ▶ 回放 runs through any range in about this long
const RANGES = [[15, "近 15 分钟"], [60, "近 1 小时"], [240, "近 4 小时"], [720, "近 12 小时"], [1440, "近 24 小时"]];

async function initTracks() {
  if ((await consoleState).central) return;  // console.js: positions history is each station's, on its own box
  document.getElementById("tracks-toggle").addEventListener("click", () => showTracks(document.getElementById("tracks-panel").hidden));
  document.getElementById("tracks-close").addEventListener("click", () => showTracks(false));
  document.getElementById("tasks-toggle").addEventListener("click", () => showTracks(false));  // the tasks panel covers it
  const form = document.getElementById("track-form");
  form.elements.range.replaceChildren(...RANGES.map(([min, label]) => JB.el("option", { value: min, selected: min === 60 }, label)),
    JB.el("option", { value: "" }, "自定义…"));
  form.elements.range.addEventListener("change", () => { if (form.elements.range.value) setRange(Number(form.elements.range.value)); });
  setRange(60);
  form.addEventListener("submit", (e) => { e.preventDefault(); loadTrack(); });
  document.getElementById("track-slider").addEventListener("input", (e) => { stopReplay(); showMoment(Number(e.target.value)); });
  document.getElementById("track-play").addEventListener("click", () => (TR.timer ? stopReplay() : replay()));
  document.getElementById("tracks-toggle").disabled = false;
}

function showTracks(show) {
  document.getElementById("tracks-panel").hidden = !show;
  document.getElementById("tracks-toggle").classList.toggle("on", show);
  if (show) {
    if (typeof showTasks === "function") showTasks(false);  // the tasks panel covers the map the track is drawn on
    if (typeof showPatrols === "function") showPatrols(false);  // the patrols panel lies where this one does
    const pick = document.getElementById("track-form").elements.responder;
    const chosen = pick.value;
    pick.replaceChildren(...S.responders.map((r) => JB.el("option", { value: r.id, selected: r.id === chosen },
      `${r.name}（${JB.label("role", r.role)}）`)));
  } else {
    stopReplay();
    clearTrack();
  }
}

// The range inputs are the browser's local time, as the operator reads the clock on the wall.
function setRange(minutes) {
  const form = document.getElementById("track-form"), now = Date.now();
  form.elements.from.value = localInput(now - minutes * 60000);
  form.elements.to.value = localInput(now);
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

async function loadTrack() {
  const form = document.getElementById("track-form"), status = document.getElementById("track-status");
  // the inputs are to the minute: "到 08:15" takes in the whole of 08:15 (what "近 1 小时" was clicked in, too)
  const from = new Date(form.elements.from.value).getTime() / 1000, to = new Date(form.elements.to.value).getTime() / 1000 + 59;
  if (!(from < to)) { status.textContent = "开始时间须早于结束时间"; return; }
  stopReplay();
  status.textContent = "查询中…";
  try {
    TR.data = await JB.api(`/api/tracks/${encodeURIComponent(form.elements.responder.value)}?from=${from}&to=${to}`);
  } catch (e) { status.textContent = `查询失败：${e.message}`; return; }
  drawTrack();
}

function drawTrack() {
  const d = TR.data, map = S.map.map;
  clearTrack();
  TR.layer = L.layerGroup().addTo(map);
  const line = d.points.map((p) => [p.lat, p.lon]);
  if (line.length) {
    L.polyline(line, { color: "#3fa7ff", weight: 4, opacity: 0.9 }).addTo(TR.layer);
    L.circleMarker(line[0], { radius: 6, color: "#3ccf7a", fillOpacity: 1 }).bindTooltip(`起点 ${JB.time(d.points[0].ts)}`).addTo(TR.layer);
    L.circleMarker(line.at(-1), { radius: 6, color: "#ff8a1f", fillOpacity: 1 }).bindTooltip(`终点 ${JB.time(d.points.at(-1).ts)}`).addTo(TR.layer);
    TR.marker = L.marker(line[0], { icon: L.divIcon({ className: "track-now", iconSize: [18, 18] }) }).addTo(TR.layer);
  }
  for (const i of d.incidents.filter((i) => i.lat !== null)) {
    L.circleMarker([i.lat, i.lon], { radius: 8, color: MAP_COLORS[i.priority] || MAP_COLORS.none, weight: 3, fillOpacity: 0.3 })
      .bindTooltip(`${JB.time(i.created_at)} ${JB.incidentTitle(i)}`).addTo(TR.layer);
  }
  const bounds = L.latLngBounds([...line, ...d.incidents.filter((i) => i.lat !== null).map((i) => [i.lat, i.lon])]);
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [60, 60], maxZoom: 17, animate: false });

  const slider = document.getElementById("track-slider");
  slider.min = d.from;
  slider.max = d.to;
  slider.step = 1;  // seconds
  slider.value = d.points.length ? d.points[0].ts : d.from;
  slider.disabled = document.getElementById("track-play").disabled = !d.points.length;
  document.getElementById("track-status").textContent = d.points.length
    ? `${d.responder.name}：${d.points.length} 个定位点${d.truncated ? "（只显示最近的部分）" : ""}，${d.incidents.length} 起警情，${d.transmissions.length} 段通话`
    : `${d.responder.name} 在这段时间没有定位记录`;
  renderSide();
  showMoment(Number(slider.value));
}

function renderSide() {
  const d = TR.data;
  document.getElementById("track-incidents").replaceChildren(...(d.incidents.length ? d.incidents.map((i) =>
    JB.el("li", { class: `p-${i.priority}`, "data-incident": i.id, "data-ts": i.created_at, onclick: () => jumpTo(i.created_at) },
      JB.el("span", { class: "when" }, JB.time(i.created_at)),
      JB.el("span", {}, JB.incidentTitle(i)),
      i.assigned_here ? JB.el("span", { class: "tag" }, "曾派此人") : JB.el("span"))) : [JB.el("li", { class: "muted" }, "无")]));
  document.getElementById("track-transmissions").replaceChildren(...(d.transmissions.length ? d.transmissions.map((t) =>
    JB.el("li", { "data-utterance": t.utterance_id, "data-ts": t.start, onclick: (e) => { if (!e.target.closest("button")) jumpTo(t.start); } },
      JB.el("span", { class: "when" }, JB.time(t.start)),
      JB.el("span", { class: "chan" }, S.names[t.channel] || t.channel),
      JB.el("span", { class: "text" }, t.readable || t.text),
      JB.audioButton(t.utterance_id))) : [JB.el("li", { class: "muted" }, "无")]));
}

function jumpTo(ts) {
  stopReplay();
  document.getElementById("track-slider").value = ts;
  showMoment(ts);
}

// The responder where his last fix before `ts` put him; what happened within a minute of it is marked in the lists.
function showMoment(ts) {
  const d = TR.data;
  if (!d) return;
  document.getElementById("track-time").textContent = JB.dateTime(ts);
  const before = d.points.filter((p) => p.ts <= ts).at(-1) || d.points[0];
  if (before && TR.marker) TR.marker.setLatLng([before.lat, before.lon]);
  for (const li of document.querySelectorAll("#track-incidents li[data-ts], #track-transmissions li[data-ts]")) {
    li.classList.toggle("now", Math.abs(Number(li.dataset.ts) - ts) <= 60);
  }
}

function replay() {
  const slider = document.getElementById("track-slider"), button = document.getElementById("track-play");
  const from = Number(slider.min), to = Number(slider.max);
  if (Number(slider.value) >= to) slider.value = from;
  const step = (to - from) / (REPLAY_SECONDS * 10);
  button.textContent = "■ 暂停";
  TR.timer = setInterval(() => {
    const next = Math.min(to, Number(slider.value) + step);
    slider.value = next;
    showMoment(next);
    if (next >= to) stopReplay();
  }, 100);
}

function stopReplay() {
  clearInterval(TR.timer);
  TR.timer = null;
  document.getElementById("track-play").textContent = "▶ 回放";
}

function clearTrack() {
  if (TR.layer) TR.layer.remove();
  TR.layer = TR.marker = null;
}

initTracks().catch((e) => console.warn("tracks", e));
