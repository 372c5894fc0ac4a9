// The guard / officer page: hold to talk into a channel like a radio, receive alerts, acknowledge, set one's status
// (在岗 / 忙碌 / 下班), share position.
"use strict";

const G = { me: null, mic: null, press: null, known: new Set(), alerts: [], lastFix: 0 };

async function main() {
  G.me = await JB.session(["guard", "officer"]);
  const talk = await JB.api("/api/me/talk");
  const select = document.getElementById("channel");
  select.replaceChildren(...talk.channels.map((c) => JB.el("option", { value: c.id, selected: c.id === talk.default }, c.name)));
  const ptt = document.getElementById("ptt"), state = document.getElementById("ptt-state");
  if (!talk.channels.length) state.textContent = "没有可用的对讲频道";
  else { ptt.disabled = false; state.textContent = "按住按钮讲话，松开结束"; }
  ptt.addEventListener("pointerdown", pressTalk);
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) ptt.addEventListener(ev, releaseTalk);
  ptt.addEventListener("contextmenu", (e) => e.preventDefault());
  JB.soundHint(document.getElementById("sound-hint"));  // an alert's sound needs one tap on the page first
  for (const button of document.querySelectorAll("#duty button")) button.addEventListener("click", setDuty);
  await loadAlerts(false);
  JB.liveSocket("/api/me/live", () => loadAlerts(true), (up) => {
    const conn = document.getElementById("conn");
    conn.textContent = up ? "在线" : "离线，重连中…";
    conn.classList.toggle("up", up);
  });
  document.getElementById("share").addEventListener("change", sharePosition);
}

async function pressTalk(e) {
  e.preventDefault();
  if (G.press) return;
  const ptt = e.currentTarget, state = document.getElementById("ptt-state");
  try { G.mic = G.mic || await JB.microphone(); } catch (err) { state.textContent = `无法打开麦克风：${err.message}`; return; }
  ptt.setPointerCapture?.(e.pointerId);
  ptt.classList.add("on");
  ptt.textContent = "正在讲话";
  state.textContent = "松开结束";
  const channel = document.getElementById("channel").value;
  G.press = JB.press(G.mic, `/api/ptt?channel=${encodeURIComponent(channel)}`, (m) => {
    if (m.type === "refused") state.textContent = "频道繁忙，部分语音未送达";
  });
}

async function releaseTalk() {
  if (!G.press) return;
  const press = G.press;
  G.press = null;
  const ptt = document.getElementById("ptt"), state = document.getElementById("ptt-state");
  ptt.classList.remove("on");
  ptt.textContent = "按住讲话";
  const result = await press.release();
  state.textContent = result.code === 1000 ? `已发送 ${(result.bytes / 32000).toFixed(1)} 秒语音` : `发送中断：${result.reason || result.code}`;
}

async function loadAlerts(live) {
  let data;
  try { data = await JB.api("/api/me/alerts"); } catch (e) { document.getElementById("alerts").textContent = e.message; return; }
  const r = data.responder;
  document.getElementById("responder").textContent = `${r.name}（${JB.label("role", r.role)}）`;
  G.alerts = data.alerts;
  showDuty(r);
  const fresh = data.alerts.filter((a) => !G.known.has(a.id));
  for (const a of data.alerts) G.known.add(a.id);
  if (live && fresh.length) {
    JB.alarm(fresh.some((a) => a.priority === "critical"), 4);
    navigator.vibrate?.([400, 200, 400, 200, 400]);
  }
  const list = document.getElementById("alerts");
  const withdrawn = data.withdrawn || [];
  if (!data.alerts.length && !withdrawn.length) { list.replaceChildren(JB.el("p", { class: "muted" }, "暂无警情")); return; }
  list.replaceChildren(...data.alerts.map((a) => alertCard(a, r.id, live && fresh.includes(a))),
    ...withdrawn.map(withdrawnCard));
}

// An alert this responder was stood down from (a provisional alert the final transcript retracted or moved).
function withdrawnCard(a) {
  return JB.el("div", { class: "alert withdrawn", "data-incident": a.id, "data-withdrawn": a.withdrawn },
    JB.el("div", { class: "title" }, JB.label("type", a.type)),
    JB.el("div", { class: "why" }, JB.label("withdrawn", a.withdrawn)),
    JB.el("div", { class: "said" }, JB.readable(a)),
    JB.el("div", { class: "muted" }, `${JB.time(a.updated_at)} · ${JB.label("status", a.status)}`));
}

function alertCard(a, myId, fresh) {
  const mine = a.responders.find((r) => r.id === myId) || {};
  const ack = (status) => async () => {
    try { await JB.api("/api/me/ack", { method: "POST", body: { incident_id: a.id, status } }); await loadAlerts(false); }
    catch (e) { alert(e.message); }
  };
  return JB.el("div", { class: `alert p-${a.priority}${fresh ? " fresh" : ""}${a.provisional ? " provisional" : ""}`, "data-incident": a.id },
    JB.el("div", { class: "title" }, `${JB.label("priority", a.priority)} · ${JB.label("type", a.type)}`),
    a.provisional ? JB.el("div", {}, JB.el("span", { class: "tag provisional", title: "呼叫人还在讲话时按实时识别发出，最终文本到达后确认或更正" }, JB.PROVISIONAL)) : null,
    JB.el("div", {}, `地点：${a.place_name || "不明"}${a.detail ? " " + a.detail : ""}${mine.distance_m != null ? `（距我约 ${JB.distance(mine.distance_m)}）` : ""}`),
    JB.el("div", { class: "said" }, JB.readable(a)),
    JB.el("div", { class: "muted" }, `${JB.time(a.created_at)} · ${JB.label("status", a.status)}`),
    mine.ack ? JB.el("div", { class: "mine" }, `我已回复：${JB.label("ack", mine.ack)}`) : null,
    G.me.role === "officer" && a.utterance_ids.length ? JB.audioButton(a.utterance_ids[a.utterance_ids.length - 1]) : null,
    JB.el("div", { class: "buttons" },
      JB.el("button", { class: "primary", onclick: ack("ack") }, "收到"),
      JB.el("button", { onclick: ack("on_scene") }, "已到场"),
      JB.el("button", { class: "danger", onclick: ack("declined") }, "无法前往")));
}

// The status buttons: the current one is lit; busy after an acknowledgement names the incident.
function showDuty(me) {
  for (const button of document.querySelectorAll("#duty button")) {
    const current = button.dataset.status === me.status;
    button.classList.toggle("on", current);
    button.setAttribute("aria-pressed", String(current));
    button.disabled = false;
  }
  const label = JB.label("responder_status", me.status);
  const incident = me.incident_id && G.alerts.find((a) => a.id === me.incident_id);
  const busyOn = incident ? `，正在处置：${JB.incidentTitle(incident)}`
    : me.incident_id ? `，正在处置 ${me.incident_id}` : "";
  document.getElementById("duty-state").textContent = `当前状态：${label}${busyOn}`;
}

async function setDuty(e) {
  const status = e.currentTarget.dataset.status;
  try { showDuty(await JB.api("/api/me/status", { method: "POST", body: { status } })); }
  catch (err) { document.getElementById("duty-state").textContent = `状态未更改：${err.message}`; }
}

function sharePosition(e) {
  const out = document.getElementById("position");
  if (!e.target.checked) { if (G.watch != null) navigator.geolocation.clearWatch(G.watch); out.textContent = ""; return; }
  if (!navigator.geolocation) { out.textContent = "本设备不支持定位"; return; }
  G.watch = navigator.geolocation.watchPosition(async (pos) => {
    if (Date.now() - G.lastFix < 10000) return; // one fix per 10 s is enough for ranking responders
    G.lastFix = Date.now();
    const { latitude: lat, longitude: lon, accuracy: acc } = pos.coords;
    try {
      await JB.api("/api/me/position", { method: "POST", body: { lat, lon, acc, tst: pos.timestamp / 1000 } });
      out.textContent = `已上报位置 ${lat.toFixed(5)}, ${lon.toFixed(5)}（±${Math.round(acc)} 米）${JB.time(pos.timestamp / 1000)}`;
    } catch (err) { out.textContent = `位置上报失败：${err.message}`; }
  }, (err) => { out.textContent = `无法定位：${err.message}`; }, { enableHighAccuracy: true });
}

main().catch((e) => { if (e.message !== "role refused") console.error(e); });
