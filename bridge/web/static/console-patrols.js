// The console's 巡更 panel (patrols, GET /api/patrols): the check-ins missed (a point of a round nobody checked in
// within its window) and the guards who left their post (dispatch/geofence.py) first, then each route's recent rounds
// point by point (✓ by position or by code, ✗ missed). The topbar's 巡更 button counts the missed check-ins of the
// last 12 hours and the guards still away, red when there are any; open, the panel draws the routes' points on the
// map. Live: the feed's `patrol` events (a check-in, a missed one, a guard leaving his post or back).
"use strict";

const PT = { data: { routes: [], missed: [], left_post: [] }, layer: null, fit: false };
const ROUND_STATE = { upcoming: "未开始", open: "进行中", done: "已完成", missed: "有漏巡" };
const HOW = { gps: "定位", code: "扫码" };

async function initPatrols() {
  if ((await consoleState).central) return;  // console.js: patrols are each station's, on its own box
  document.getElementById("patrols-toggle").addEventListener("click", () => showPatrols(document.getElementById("patrols-panel").hidden));
  document.getElementById("patrols-close").addEventListener("click", () => showPatrols(false));
  document.getElementById("tasks-toggle").addEventListener("click", () => showPatrols(false));  // the tasks panel covers it
  document.getElementById("patrols-toggle").disabled = false;
  await loadPatrols();
  setInterval(loadPatrols, 60000);  // rounds open and close with nobody acting
}

async function loadPatrols() {
  try { PT.data = await JB.api("/api/patrols"); } catch (e) { console.warn("patrols", e); return; }
  renderPatrols();
}

// A check-in, a missed one, a guard leaving his post or back (the live feed): the latest state.
function onPatrolEvent(event) {
  if (event.kind === "missed" || event.kind === "left_post") JB.alarm(false, 1);
  loadPatrols();
}

function showPatrols(show) {
  document.getElementById("patrols-panel").hidden = !show;
  document.getElementById("patrols-toggle").classList.toggle("on", show);
  if (show) {
    if (typeof showTasks === "function") showTasks(false);
    if (typeof showTracks === "function") showTracks(false);
  }
  PT.fit = show;  // the map goes to the routes once they are drawn (the first load may still be on its way)
  drawPatrolPoints();
}

// A round's hours, with 明日 when it starts tomorrow (the next round of a route walked once a day).
function roundHours(x) {
  const day = (ts) => new Date(ts * 1000).toDateString();
  return `${day(x.start) === day(Date.now() / 1000) ? "" : "明日 "}${JB.time(x.start).slice(0, 5)}–${JB.time(x.end).slice(0, 5)}`;
}

function renderPatrols() {
  const { routes, missed, left_post: exits } = PT.data;
  const away = exits.filter((x) => x.returned_at === null);
  const badge = document.getElementById("patrols-badge");
  badge.textContent = missed.length + away.length || "";
  badge.classList.toggle("alarm", missed.length + away.length > 0);
  document.getElementById("post-exits").replaceChildren(...(exits.length ? exits.map((x) =>
    JB.el("li", { class: x.returned_at === null ? "missed" : "", "data-responder": x.responder_id },
      JB.el("span", { class: "when" }, JB.time(x.left_at)),
      JB.el("span", {}, `${x.name} 离开${x.post} ${JB.distance(x.distance_m)}`),
      JB.el("span", { class: "muted" }, x.returned_at === null ? "尚未返回" : `${JB.time(x.returned_at)} 已返回`)))
    : [JB.el("li", { class: "muted" }, "近 12 小时没有保安离岗")]));
  document.getElementById("patrol-missed").replaceChildren(...(missed.length ? missed.map((m) =>
    JB.el("li", { class: "missed", "data-route": m.route_id, "data-point": m.point },
      JB.el("span", { class: "when" }, JB.time(m.round_end)),
      JB.el("span", {}, `${m.route_name} · ${m.point_name} 未签到`),
      JB.el("span", { class: "muted" }, `${JB.time(m.round_start)} 开始的一轮 · ${m.patrollers.map((p) => p.name).join("、")}`)))
    : [JB.el("li", { class: "muted" }, "近 12 小时没有漏巡")]));
  document.getElementById("patrol-routes").replaceChildren(...routes.map(routeCard));
  drawPatrolPoints();
}

function routeCard(r) {
  const rounds = r.rounds.slice(-4).reverse();  // the next one and the latest three
  return JB.el("div", { class: "patrol-route", "data-route": r.id },
    JB.el("div", { class: "title" }, JB.el("strong", {}, r.name),
      JB.el("span", { class: "muted" }, `${r.patrollers.map((p) => p.name).join("、")} · 每轮 ${r.window_min} 分钟内签到 ${r.points.length} 个点`)),
    ...rounds.map((x) => JB.el("div", { class: `patrol-round ${x.state}`, "data-start": x.start },
      JB.el("span", { class: "when" }, roundHours(x)),
      JB.el("span", { class: "state" }, ROUND_STATE[x.state]),
      JB.el("span", { class: "points" }, ...r.points.map((p, i) => {
        const c = x.checkins.find((k) => k.point === i);
        const mark = c ? "✓" : x.state === "missed" ? "✗" : "○";
        return JB.el("span", { class: c ? "ok" : x.state === "missed" ? "bad" : "", title: c ? `${c.responder.name} ${JB.time(c.ts)} ${HOW[c.how]}` : "" },
          `${mark} ${p.name}${c ? ` ${JB.time(c.ts).slice(0, 5)}${c.how === "code" ? "(扫码)" : ""}` : ""}`);
      })))));
}

// The routes' points on the map while the panel is open, as the latest started round has them.
function drawPatrolPoints() {
  if (PT.layer) PT.layer.remove();
  PT.layer = null;
  if (document.getElementById("patrols-panel").hidden || !S.map) return;
  PT.layer = L.layerGroup().addTo(S.map.map);
  const points = PT.data.routes.flatMap((r) => r.points.map((p) => [p.lat, p.lon]));
  if (PT.fit && points.length) {
    S.map.map.fitBounds(L.latLngBounds(points), { padding: [60, 60], maxZoom: 18, animate: false });
    PT.fit = false;
  }
  for (const r of PT.data.routes) {
    const latest = r.rounds.filter((x) => x.state !== "upcoming").at(-1);
    L.polyline(r.points.map((p) => [p.lat, p.lon]), { color: "#b38cff", weight: 2, dashArray: "6 6" }).addTo(PT.layer);
    r.points.forEach((p, i) => {
      const checked = latest && latest.checkins.some((k) => k.point === i);
      const color = checked ? "#3ccf7a" : latest && latest.state === "missed" ? "#ff4d4f" : "#9db0c4";
      L.circle([p.lat, p.lon], { radius: p.radius_m, color, weight: 2, fillOpacity: 0.25 })
        .bindTooltip(`${i + 1}. ${p.name}`, { permanent: true, direction: "top" }).addTo(PT.layer);
    });
  }
}

initPatrols().catch((e) => console.warn("patrols", e));
