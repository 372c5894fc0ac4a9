// The guard / officer page: hold to talk into a channel like a radio, receive alerts, acknowledge, set one's status
// (在岗 / 忙碌 / 下班), share position.
"use strict";

const G = { me: null, mic: null, press: null, known: new Set(), alerts: [], lastFix: 0, hotMic: false, sosBusy: false };
const SOS_HOLD_MS = 1500;  // held this long, not tapped: a phone in a pocket must not raise an SOS (guard.css's bar too)

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
  holdForSos(document.getElementById("sos"));
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
  if (G.press || G.hotMic) return;  // the SOS's hot microphone has the microphone
  const ptt = e.currentTarget, state = document.getElementById("ptt-state");
  try { G.mic = G.mic || await JB.microphone(); } catch (err) { state.textContent = `无法打开麦克风：${err.message}`; return; }
  ptt.setPointerCapture?.(e.pointerId);
  ptt.classList.add("on");
  ptt.textContent = "正在讲话";
  state.textContent = "松开结束";
  const channel = document.getElementById("channel").value;
  G.press = JB.press(G.mic, `/api/ptt?channel=${encodeURIComponent(channel)}`, (m) => {
    if (m.type === "refused") state.textContent = "频道繁忙，部分语音未送达";
    if (m.type !== "busy") return;
    state.textContent = `频道占用：${m.by} 正在讲话，请稍后再按`;
    ptt.classList.remove("on");  // not talking: the button says so while it is still held
    ptt.textContent = "按住讲话";
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
  if (result.code === 1013) return;  // the channel was busy: its message stays
  state.textContent = result.code === 1000 ? `已发送 ${(result.bytes / 32000).toFixed(1)} 秒语音` : `发送中断：${result.reason || result.code}`;
}

// --- SOS / 一键报警 ---------------------------------------------------------------------------------------------

// The SOS button fires only when held SOS_HOLD_MS; the microphone is opened at the touch (a browser opens it only
// from a user's gesture), so the hot microphone can start the moment the SOS is raised.
function holdForSos(button) {
  const state = document.getElementById("sos-state");
  let timer = null;
  button.disabled = false;
  button.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    if (timer || G.sosBusy) return;
    button.setPointerCapture?.(e.pointerId);
    if (!G.mic) G.micOpening = JB.microphone().then((mic) => { G.mic = mic; return mic; }).catch(() => null);
    button.classList.add("holding");
    state.textContent = "继续按住…";
    timer = setTimeout(() => { timer = null; button.classList.remove("holding"); raiseSos(button, state); }, SOS_HOLD_MS);
  });
  const letGo = () => {
    if (!timer) return;
    clearTimeout(timer);
    timer = null;
    button.classList.remove("holding");
    state.textContent = "未报警：需按住 1.5 秒";
  };
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(ev, letGo);
  button.addEventListener("contextmenu", (e) => e.preventDefault());
}

async function raiseSos(button, state) {
  G.sosBusy = true;
  button.classList.add("sent");
  state.classList.add("live");
  state.textContent = "正在报警…";
  try {
    const raised = await JB.api("/api/me/sos", { method: "POST", body: await phonePosition() });
    const i = raised.incident;
    state.textContent = `已报警：指挥室已收到（${i.place_name || "位置不明"}${i.detail ? " " + i.detail : ""}）`;
    navigator.vibrate?.([300, 100, 300]);
    await hotMicrophone(i.id, raised.hot_mic_s, state);
  } catch (e) {
    state.textContent = `报警未发出：${e.message}。请用对讲机呼叫指挥室`;
  }
  G.sosBusy = false;
  button.classList.remove("sent");
  state.classList.remove("live");
}

// The phone's own fix when it gives one within a few seconds; else nothing, and the server takes the last known.
function phonePosition() {
  return new Promise((resolve) => {
    if (!navigator.geolocation) { resolve({}); return; }
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude, acc: p.coords.accuracy }),
      () => resolve({}), { enableHighAccuracy: true, timeout: 3000, maximumAge: 30000 });
  });
}

// The hot microphone: the page's push-to-talk way (archived and recognised like any call), tied to the SOS.
async function hotMicrophone(incidentId, seconds, state) {
  const mic = G.mic || await G.micOpening;
  if (!mic || !seconds) { state.textContent += "；麦克风未能开启"; return; }
  if (G.press) await releaseTalk();  // the SOS takes the microphone from a talk press
  G.hotMic = true;
  const channel = document.getElementById("channel").value;
  const press = JB.press(mic, `/api/ptt?channel=${encodeURIComponent(channel)}&sos=${encodeURIComponent(incidentId)}`);
  const said = state.textContent;
  for (let left = Math.round(seconds); left > 0; left--) {
    state.textContent = `${said}；现场录音中，还剩 ${left} 秒，请说明情况`;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const result = await press.release();
  G.hotMic = false;
  state.textContent = result.code === 1000 ? `${said}；已发送 ${(result.bytes / 32000).toFixed(1)} 秒现场录音`
    : `${said}；现场录音中断：${result.reason || result.code}`;
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
