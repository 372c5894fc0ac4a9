// The operator console: channel wall (with each channel's activity strip), live transcript feed, incident queue and map, all fed by the
// /api/events WebSocket after one /api/console/state at load. The same page at the central tier (`state.central`,
// bridge/web/central_console.py) shows the stations of the operator's scope, with a station filter; what only a box
// has (listening in, talking back, patches, tasks, patrols, track replay, SOS, statistics) is hidden there.
"use strict";

const S = { central: false, station: "",  // at central: the station the wall shows ("": every one of the scope)
            channels: new Map(), incidents: new Map(), lines: new Map(), responders: [], names: {}, transmitters: [],
            activity: null, mic: null, listening: new Map(), map: null, selected: null, unseen: new Set(),
            lastSaid: new Map(),  // channel id -> its latest final transcript, shown on the channel's card
            sos: [], sosTimer: null };  // SOS alarms no operator has acknowledged (GET /api/sos), the tone repeating
const REMIND_S = 20;
const METER_FALL_DB = 8;  // per level event (5 a second)
const PENDING = "needs_confirmation";  // 待确认: sounds like a report, type not certain; nobody alerted until confirmed
// one click confirms one of these; the other types are in the entry's list (its guess always gets a button)
const COMMON_TYPES = ["fight", "theft", "robbery", "weapon", "fire", "medical", "missing", "dispute", "traffic", "suspicious"];

// the state loaded at start, which the panels wait for before asking for theirs (none of them is at central)
let stateLoaded;
const consoleState = new Promise((resolve) => { stateLoaded = resolve; });

async function main() {
  await JB.session(["operator"]);
  const state = await JB.api("/api/console/state");
  stateLoaded(state);
  if (state.central) showCentral(state.stations);
  S.transmitters = state.transmitters;
  S.responders = state.responders;
  S.activity = state.activity;
  if (state.jurisdiction) {
    document.getElementById("jurisdiction").textContent = state.jurisdiction.name;
    S.map = new ConsoleMap(document.getElementById("map"),
      { places: state.jurisdiction.places, tileUrl: state.tile_url, onSelect: (id) => selectIncident(id, true) });
  }
  for (const c of state.channels) { S.names[c.id] = c.name; S.channels.set(c.id, c); }
  for (const t of state.transcripts) if (!S.lastSaid.has(t.channel)) S.lastSaid.set(t.channel, t);  // newest first
  renderChannels();
  renderPatches(state.patches);
  for (const t of [...state.transcripts].reverse()) addLine(t, false);
  for (const i of state.incidents) S.incidents.set(i.id, i);
  S.map?.setResponders(S.responders);
  refreshIncidents();
  drawActivity();
  JB.soundHint(document.getElementById("sound-hint"));
  if (!S.central) await loadSos();
  JB.liveSocket("/api/events", onEvent, (up) => {
    const conn = document.getElementById("conn");
    conn.textContent = up ? "实时连接" : "连接中断，重连中…";
    conn.classList.toggle("up", up);
  });
  setInterval(() => { document.getElementById("clock").textContent = new Date().toLocaleString("zh-CN", { hour12: false }); }, 1000);
  setInterval(drawActivity, 10000);
  setInterval(remindUnseen, REMIND_S * 1000);
  setInterval(async () => {  // positions come from phones, patches from other operators and the CLI
    try {  // (503 where nothing is dispatched: a central without a region's jurisdiction files)
      S.responders = await JB.api("/api/responders");
      S.map?.setResponders(S.responders);
    } catch (e) { console.warn("responders", e); }
    if (!S.central) refreshPatches();
    let added = false;
    for (const c of await JB.api("/api/channels")) {  // recognition lag, and what the channel's source refused
      const known = S.channels.get(c.id);
      // central's counts come from its database: a channel heard for the first time today joins the wall
      if (S.central) { added ||= !known; S.names[c.id] = c.name; S.channels.set(c.id, { ...c, talking: known?.talking ?? false }); }
      else if (known) Object.assign(known, fromApi(c));
      if (known) updateChannel(c.id);
    }
    if (added) { renderChannels(); drawActivity(); }
  }, 15000);
}

function onEvent({ topic, data }) {
  if (topic === "channel") {  // the bus carries the channel's own state (central's: whether it talks); the rest comes from /api/channels
    S.channels.set(data.id, { ...(S.channels.get(data.id) ?? {}), ...data });
    if (S.central) keyedUp(data.id, data.talking);
    updateChannel(data.id);
  }
  else if (topic === "level") {
    const c = S.channels.get(data.channel);
    // a meter's fall is slowed (METER_FALL_DB per event) so a pause between two words does not blank it
    if (c) { c.level_dbfs = Math.max(data.level_dbfs, c.level_dbfs - METER_FALL_DB); c.talking = data.talking; updateChannel(data.channel); }
  } else if (topic === "partial") addLine({ ...data, partial: true }, true);
  else if (topic === "transcript") {
    addLine(data, true);
    const last = S.lastSaid.get(data.channel);  // (an utterance heard again comes after later ones)
    if (!last || (last.start || 0) <= (data.start || 0)) { S.lastSaid.set(data.channel, data); updateChannel(data.channel); }
  }
  else if (topic === "utterance") {
    countActivity(data);
    const c = S.channels.get(data.channel);
    if (S.central && c) {  // central counts them itself: no channel state follows an utterance there
      c.utterances += 1; c.last_utterance = data;
      c.talking &&= data.reason === "max_length";  // cut at its longest, the caller is still keyed
      keyedUp(data.channel, c.talking);
      updateChannel(data.channel);
    }
  }
  else if (topic === "incident") onIncident(data);
  else if (topic === "fault") onFault(data);
  else if (topic === "task") onTaskEvent(data);  // console-tasks.js
  else if (topic === "patrol") onPatrolEvent(data);  // console-patrols.js
}

// A fault (an utterance the archive could not store) shows on its channel's card at once: no channel state
// follows it on the bus, so waiting for one would show it only at the channel's next utterance.
function onFault(fault) {
  const c = S.channels.get(fault.channel);
  if (!c) return;
  c.faults = [...(c.faults || []), { at: Date.now() / 1000, message: fault.message, active: true }];
  c.active_faults = (c.active_faults || 0) + 1;
  updateChannel(fault.channel);
}

// --- the central tier ----------------------------------------------------------------------------------------

// At central: the station filter (the stations of the operator's scope), and nothing of what only a box has.
function showCentral(stations) {
  S.central = true;
  document.body.classList.add("central");
  for (const id of ["patrols-toggle", "tracks-toggle", "tasks-toggle"]) document.getElementById(id).hidden = true;
  document.querySelector("#channels-panel .patch-bar").hidden = true;
  document.querySelector("#channels-panel .caption").textContent = "中心只收到各站已结束的通话（无实时电平、监听与喊话）；条形：近 60 分钟每分钟通话次数（最右为现在）";
  const filter = document.getElementById("station-filter");
  filter.replaceChildren(JB.el("option", { value: "" }, `全部派出所（${stations.length}）`),
    ...stations.map((s) => JB.el("option", { value: s.id }, s.name)));
  filter.hidden = false;
  filter.addEventListener("change", () => {
    S.station = filter.value;
    renderChannels();
    for (const row of S.lines.values()) row.hidden = !shown(row.dataset.channel);
    refreshIncidents();
    drawActivity();
  });
}

// At central a channel's keying down may be lost (sent at most once): its light goes out with its utterance (unless
// that was cut at its longest: the caller talks on, and the timer starts again), or after the longest an utterance
// lasts (the edge's max_utterance_s, 60 s by default).
const KEYED_MAX_MS = 65000;
const keyedTimers = new Map();
function keyedUp(id, talking) {
  clearTimeout(keyedTimers.get(id));
  if (talking) keyedTimers.set(id, setTimeout(() => onEvent({ topic: "channel", data: { id, talking: false } }), KEYED_MAX_MS));
}

// whether what was heard on `channel` is on the wall now: at central its station is the one filtered for, if any
function shown(channel) {
  return !S.station || (channel || "").startsWith(`${S.station}.`);
}

// --- channel wall -------------------------------------------------------------------------------------------

function renderChannels() {
  const wall = document.getElementById("channels");
  wall.replaceChildren();
  for (const c of S.channels.values()) {
    if (!shown(c.id)) continue;
    const listen = S.central ? null  // central hears finished utterances only: replay them from the feed
      : JB.el("button", { class: "listen", title: "在本机收听该频道", onclick: () => toggleListen(c.id, listen) }, "监听");
    const talk = S.transmitters.includes(c.id) ? JB.el("button", { class: "talk", title: "按住讲话（指挥优先）" }, "按住喊话") : null;
    if (talk) holdToTalk(talk, c.id);
    wall.append(JB.el("div", { class: "channel", id: `ch-${c.id}`, "data-channel": c.id },
      JB.el("div", { class: "head" }, JB.el("span", { class: "talk-dot" }), JB.el("span", { class: "name" }, c.name),
        JB.el("span", { class: "muted state" })),
      JB.el("div", { class: "meter" }, JB.el("div")),
      JB.el("canvas", { class: "spark" }),
      JB.el("div", { class: "said" }),
      JB.el("div", { class: "foot" }, JB.el("span", { class: "last" }), listen, talk),
      JB.el("div", { class: "tx-state muted" }), JB.el("div", { class: "faults" })));
    updateChannel(c.id);
  }
  const a = document.getElementById("patch-a"), b = document.getElementById("patch-b");
  const options = () => S.transmitters.map((id) => JB.el("option", { value: id }, S.names[id] || id));
  a.replaceChildren(...options());
  b.replaceChildren(...options());
  b.selectedIndex = Math.min(1, S.transmitters.length - 1);  // two different channels to start with
  const add = document.getElementById("patch-add"), error = document.getElementById("patch-error");
  const check = () => { add.disabled = S.transmitters.length < 2 || a.value === b.value; };
  a.onchange = b.onchange = check;
  check();
  add.onclick = async () => {
    error.textContent = "";
    try { await JB.api("/api/patches", { method: "POST", body: { a: a.value, b: b.value, mode: "utterance" } }); }
    catch (e) { error.textContent = `互通失败：${e.message}`; }
    refreshPatches();
  };
}

// What a channel's state has only from /api/channels (not from the bus): recognition lag, its source's refusals, the
// audio it did not hear while transmitting and its announcements
function fromApi({ asr, rejected, source_error, muted_s, announcements }) {
  return { asr, rejected, source_error, muted_s, announcements };
}

function updateChannel(id) {
  const c = S.channels.get(id), card = document.getElementById(`ch-${id}`);
  if (!c || !card) return;
  card.classList.toggle("talking", !!c.talking);
  card.classList.toggle("fault", c.active_faults > 0);
  const pct = Math.max(0, Math.min(100, (c.level_dbfs + 60) / 60 * 100));  // -60 dBFS (hiss) .. 0 dBFS
  card.querySelector(".meter div").style.width = `${pct.toFixed(0)}%`;
  const waiting = c.asr?.pending ? ` · ${c.asr.pending} 条待识别` : "";  // recognition behind on this channel
  const refused = c.rejected ? ` · 拒收 ${c.rejected}` : "";  // packets, files or pushed audio its source refused
  // received audio muted while the channel transmitted: whoever called meanwhile was not heard
  const muted = c.muted_s >= 1 ? ` · 发射时未收听 ${Math.round(c.muted_s)} 秒` : "";
  const state = card.querySelector(".state");
  state.textContent = (!c.running ? "未运行" : c.talking ? "正在讲话" : `${c.utterances} 次通话`) + waiting + refused + muted;
  const hints = [];
  if (c.rejected && c.source_error) hints.push(`最近的错误：${c.source_error}`);
  const spoken = c.announcements;
  if (spoken && (spoken.announced || Object.keys(spoken.dropped).length)) {
    const dropped = Object.values(spoken.dropped).reduce((a, b) => a + b, 0);
    hints.push(`播报 ${spoken.announced} 条，共 ${Math.round(spoken.airtime_s)} 秒；未播 ${dropped} 条`);
  }
  state.title = hints.join("\n");
  const last = c.last_utterance;
  card.querySelector(".last").textContent = last ? `上次 ${JB.time(last.start)} · ${last.duration.toFixed(1)} 秒` : "暂无通话";
  const said = S.lastSaid.get(id), text = said ? JB.readable(said) : null;
  card.querySelector(".said").replaceChildren(...(text && text.textContent.trim() ? [text] : []));
  card.querySelector(".said").title = text ? text.textContent : "";
  const active = (c.faults || []).filter((f) => f.active);
  card.querySelector(".faults").textContent = active.length ? `故障：${active[active.length - 1].message}` : "";
}

async function toggleListen(id, button) {
  if (S.listening.has(id)) {
    S.listening.get(id)();
    S.listening.delete(id);
    button.classList.remove("on");
    button.textContent = "监听";
    return;
  }
  try { S.listening.set(id, await JB.listen(id)); button.classList.add("on"); button.textContent = "监听中"; }
  catch (e) { txState(id, `无法监听：${e.message}`); }
}

function txState(channelId, text) { document.querySelector(`#ch-${CSS.escape(channelId)} .tx-state`).textContent = text; }

function holdToTalk(button, channelId) {
  let press = null, held = false;
  const down = async (e) => {
    e.preventDefault();
    if (held) return;
    held = true;
    try { S.mic = S.mic || await JB.microphone(); } catch (err) { txState(channelId, `无法打开麦克风：${err.message}`); return; }
    if (!held) return;  // released while the microphone was opening
    button.classList.add("on");
    button.textContent = "正在喊话";
    txState(channelId, "正在喊话…（松开结束）");
    press = JB.press(S.mic, `/api/channels/${encodeURIComponent(channelId)}/talk`, (m) => {
      if (m.type === "result") {
        txState(channelId, m.status === "sent" ? `喊话已发出（${m.keyed_s} 秒）` : `喊话未发出：${m.error || m.status}`);
      }
    });
  };
  const up = () => {
    held = false;
    if (!press) return;
    press.release();
    press = null;
    button.classList.remove("on");
    button.textContent = "按住喊话";
    txState(channelId, "发送中…");
  };
  button.addEventListener("pointerdown", down);
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(ev, up);
}

async function refreshPatches() {
  try { renderPatches(await JB.api("/api/patches")); } catch (e) { console.warn("patches", e); }
}

function renderPatches(patches) {
  document.getElementById("patches").replaceChildren(...(patches || []).map((p) => JB.el("div", { class: "patch", "data-patch": `${p.a}|${p.b}` },
    JB.el("span", {}, `${S.names[p.a] || p.a} ⇄ ${S.names[p.b] || p.b}`), JB.el("span", { class: "muted" }, p.active ? "转发中" : "已互通"),
    JB.el("button", { class: "small", onclick: async () => {
      try { await JB.api(`/api/patches/${encodeURIComponent(p.a)}/${encodeURIComponent(p.b)}`, { method: "DELETE" }); }
      catch (e) { document.getElementById("patch-error").textContent = `断开失败：${e.message}`; }
      refreshPatches();
    } }, "断开"))));
}

// --- transcript feed ----------------------------------------------------------------------------------------

function addLine(t, live) {
  const id = t.utterance_id, feed = document.getElementById("feed");
  const row = JB.el("div", { class: `line${t.partial ? " partial" : ""}`, "data-utterance": id, "data-channel": t.channel },
    JB.el("span", { class: "when" }, JB.time(t.start || Date.now() / 1000)),
    JB.el("span", { class: "chan" }, S.names[t.channel] || t.channel),
    JB.el("span", { class: "text" }, JB.readable(t)),
    t.partial ? JB.el("span") : JB.audioButton(id));
  row.hidden = !shown(t.channel);
  const old = S.lines.get(id);
  if (old) old.replaceWith(row); else feed.append(row);
  S.lines.set(id, row);
  while (feed.children.length > 200) { S.lines.delete(feed.firstChild.dataset.utterance); feed.firstChild.remove(); }
  if (live || !old) feed.scrollTop = feed.scrollHeight;
}

// --- incidents ----------------------------------------------------------------------------------------------

async function onIncident(event) {
  if (event.after.type === "sos") loadSos();  // raised, pressed again, or acknowledged by another operator
  const view = await JB.api(`/api/incidents/${encodeURIComponent(event.after.id)}`);
  S.incidents.set(view.id, view);
  const urgent = view.priority === "critical" || view.priority === "high";
  if (event.type === "new" && urgent) S.unseen.add(view.id);
  if (!JB.OPEN.has(view.status)) S.unseen.delete(view.id);
  refreshIncidents(event.type === "new" ? view.id : null);
  if (event.type === "new") {
    const critical = view.priority === "critical";
    JB.alarm(critical, critical ? 6 : 2);
  } else if (event.reason === "unconfirmed") JB.alarm(false, 3);  // a 待确认 report has waited too long
  else if (event.reason === "rerouted" || event.reason === "requeued") JB.alarm(false, 1);  // the final moved it
  else if (event.reason === "placed") JB.alarm(false, 1);  // its place came in the next transmission (alerted if sure)
}

// The banner stays until the operator has looked: it names the most urgent incident not yet opened, and while a
// critical one is unseen the alarm sounds again every REMIND_S.
function updateBanner() {
  const unseen = [...S.unseen].map((id) => S.incidents.get(id)).filter(Boolean).sort((a, b) =>
    (JB.PRIORITY_ORDER[a.priority] - JB.PRIORITY_ORDER[b.priority]) || (b.created_at - a.created_at));
  const banner = document.getElementById("banner");
  banner.hidden = !unseen.length;
  if (!unseen.length) return;
  const top = unseen[0];
  banner.className = `banner p-${top.priority}`;
  banner.textContent = `${JB.label("priority", top.priority)}警情：${JB.incidentTitle(top)}` +
    (unseen.length > 1 ? `（另有 ${unseen.length - 1} 起未查看）` : "");
  banner.onclick = () => selectIncident(top.id, true);
}

function remindUnseen() {
  if ([...S.unseen].some((id) => S.incidents.get(id)?.priority === "critical")) JB.alarm(true, 2);
}

function selectIncident(id, scroll = false) {
  S.selected = id;
  S.unseen.delete(id);
  updateBanner();
  for (const card of document.querySelectorAll(".incident.selected")) card.classList.remove("selected");
  const card = document.getElementById(`inc-${id}`);
  if (card) {
    card.classList.add("selected");
    card.classList.remove("unseen");
    if (scroll) card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  S.map?.select(id);
}

function refreshIncidents(freshId = null) {
  renderIncidents(freshId);
  S.map?.setIncidents([...S.incidents.values()]);
  updateBanner();
}

function renderIncidents(freshId = null) {
  const all = [...S.incidents.values()].filter((i) => shown(i.channel));
  renderConfirmQueue(all.filter((i) => i.status === PENDING), freshId);
  const list = all.filter((i) => i.status !== PENDING).sort((a, b) =>
    (JB.OPEN.has(b.status) - JB.OPEN.has(a.status)) || (JB.PRIORITY_ORDER[a.priority] - JB.PRIORITY_ORDER[b.priority]) || (b.created_at - a.created_at));
  document.getElementById("incidents").replaceChildren(...list.map((i) => incidentCard(i, i.id === freshId)));
  const open = list.filter((i) => JB.OPEN.has(i.status));
  document.getElementById("incident-count").textContent =
    `未结 ${open.length} 起${open.some((i) => i.priority === "critical") ? `，紧急 ${open.filter((i) => i.priority === "critical").length} 起` : ""}`;
}

function incidentCard(i, fresh) {
  const open = JB.OPEN.has(i.status);
  const act = (label, fn, cls = "") => JB.el("button", { class: cls, onclick: async () => {
    S.unseen.delete(i.id);  // acting on it is looking at it
    try { S.incidents.set(i.id, await fn()); refreshIncidents(); } catch (e) { alert(e.message); }
  } }, label);
  const status = (s, note = "") => JB.api(`/api/incidents/${i.id}/status`, { method: "POST", body: { status: s, note } });
  const actions = [
    open && act(i.assigned.length ? "改派" : "派警", () => chooseResponders(i), "primary"),
    open && i.status !== "on_scene" && act("到场", () => status("on_scene")),
    open && act("已处置", () => status("resolved")),
    i.status === "resolved" && act("已回访", () => status("followed_up")),
    act("备注", async () => {
      const text = prompt("备注内容");
      if (!text) return S.incidents.get(i.id);
      return JB.api(`/api/incidents/${i.id}/notes`, { method: "POST", body: { text } });
    }),
    open && act("误报", () => status("closed_false_alarm"), "danger"),
    open && i.type === "dispute" && JB.el("button", { onclick: () => pushDispute(i) }, "推送网格"),  // console-tasks.js
  ];
  const classes = ["incident", `p-${i.priority}`, !open && "closed", fresh && "fresh", S.unseen.has(i.id) && "unseen",
                   S.selected === i.id && "selected"].filter(Boolean).join(" ");
  const select = (e) => { if (!e.target.closest("button, summary, a, input, dialog")) selectIncident(i.id); };
  return JB.el("div", { id: `inc-${i.id}`, class: classes, "data-incident": i.id, onclick: select, title: "点击在地图上查看" },
    JB.el("div", { class: "title" },
      JB.el("span", { class: `tag ${i.priority}` }, JB.label("priority", i.priority)),
      JB.el("span", {}, JB.label("type", i.type)),
      JB.el("span", { class: "place" }, i.place_name ? `@ ${i.place_name}${i.detail ? " " + i.detail : ""}` : "地点不明"),
      JB.el("span", { class: "tag" }, JB.label("status", i.status)),
      i.provisional ? JB.el("span", { class: "tag provisional", title: "呼叫人还在讲话时按实时识别派警，最终文本到达后确认、改派或撤销" }, JB.PROVISIONAL) : null),
    JB.el("div", { class: "muted" }, `${JB.time(i.created_at)} · ${S.names[i.channel] || i.channel}${i.reports > 1 ? ` · ${i.reports} 次报警` : ""}`),
    JB.el("div", { class: "said" }, JB.readable(i), " ", i.utterance_ids.length ? JB.audioButton(i.utterance_ids[i.utterance_ids.length - 1]) : null),
    JB.el("ul", { class: "responders" }, i.responders.map((r) => JB.el("li", {},
      JB.el("span", {}, `${r.name || r.id}（${JB.label("role", r.role)}）`),
      JB.el("span", { class: "muted" }, JB.distance(r.distance_m)),
      JB.el("span", { class: "muted" }, JB.label("reason", r.reason)),
      JB.el("span", { class: r.ack === "declined" ? "declined" : r.ack ? "acked" : "muted" }, r.ack ? JB.label("ack", r.ack) : "待回复")))),
    JB.el("details", {}, JB.el("summary", {}, `处置记录（${i.timeline.length}）`),
      JB.el("ol", {}, i.timeline.map((e) => JB.el("li", {}, `${JB.time(e.ts)} ${JB.label("timeline", e.kind)} · ${e.actor}`,
        e.kind === "status" ? ` → ${JB.label("status", e.detail.to)}${e.detail.note ? `（${e.detail.note}）` : ""}` : "",
        e.kind === "confirmed" ? ` → ${JB.label("type", e.detail.type)}（${JB.label("priority", e.detail.priority)}）` : "",
        e.kind === "rerouted" ? `：${e.detail.from.place || "地点不明"} ${JB.label("type", e.detail.from.type)} → ${e.detail.to.place || "地点不明"} ${JB.label("type", e.detail.to.type)}` : "",
        e.kind === "placed" ? `：${e.detail.place}（${e.detail.text}）` : "",
        e.kind === "withdrawn" ? `：${e.detail.responders.join("、")}（${JB.label("withdrawn", e.detail.change)}）` : "",
        e.detail && e.detail.final ? `（最终文本：${e.detail.final}）` : "",
        e.kind === "note" ? `：${e.detail.text}` : "")))),
    JB.el("div", { class: "actions" }, actions.filter(Boolean)));
}

// --- SOS: a guard or officer in danger -----------------------------------------------------------------------

// The SOS alarm: a red banner and a tone every SOS_REPEAT_MS, until an operator acknowledges the SOS (确认收到). It
// is the server's state (a reload, another console, a restart: still alarming); a new press of the same SOS alarms
// again.
const SOS_REPEAT_MS = 3000;

async function loadSos() {
  try { S.sos = (await JB.api("/api/sos")).alarms; } catch (e) { console.warn("sos", e); }
  renderSos();
}

function renderSos() {
  const banner = document.getElementById("sos-banner");
  banner.hidden = !S.sos.length;
  banner.replaceChildren(...S.sos.map((a) => {
    const i = a.incident;
    return JB.el("div", { class: "sos-alarm", "data-incident": a.incident_id },
      JB.el("span", { class: "sos-title" }, "SOS 紧急求助"),
      JB.el("span", { class: "who" }, `${a.caller_name}（${a.source === "radio" ? "对讲机呼救" : "手机一键报警"}）`),
      JB.el("span", { class: "where" }, i.place_name ? `@ ${i.place_name}${i.detail ? " " + i.detail : ""}` : "位置不明，请派警"),
      JB.el("span", { class: "when" }, `${JB.time(a.raised_at)}${a.presses > 1 ? ` · 已求助 ${a.presses} 次` : ""}`),
      JB.el("button", { class: "show", onclick: () => selectIncident(a.incident_id, true) }, "查看"),
      JB.el("button", { class: "ack", onclick: () => acknowledgeSos(a.incident_id) }, "确认收到"));
  }));
  if (S.sos.length && !S.sosTimer) { sosTone(); S.sosTimer = setInterval(sosTone, SOS_REPEAT_MS); }
  else if (!S.sos.length && S.sosTimer) { clearInterval(S.sosTimer); S.sosTimer = null; }
}

function sosTone() {
  JB.alarm(true, 4);
  JB.stats.sosTones = (JB.stats.sosTones || 0) + 1;
}

async function acknowledgeSos(incidentId) {
  try { await JB.api(`/api/sos/${encodeURIComponent(incidentId)}/ack`, { method: "POST" }); }
  catch (e) { alert(`确认失败：${e.message}`); }
  selectIncident(incidentId, true);
  await loadSos();
}

// --- 待确认: reports whose type the machine is not sure of ---------------------------------------------------------

// The queue stays above the incident list (and its own scroll) while it holds anything: most urgent first, then the
// longest waiting. An entry leaves it when anyone confirms or dismisses it (the incident event says so).
function renderConfirmQueue(pending, freshId) {
  pending.sort((a, b) => (JB.PRIORITY_ORDER[a.priority] - JB.PRIORITY_ORDER[b.priority]) || (a.created_at - b.created_at));
  document.getElementById("confirm-queue").hidden = !pending.length;
  document.getElementById("confirm-count").textContent = pending.length;
  document.getElementById("confirm-list").replaceChildren(...pending.map((i) => confirmEntry(i, i.id === freshId)));
}

function confirmEntry(i, fresh) {
  const overdue = i.timeline.some((e) => e.kind === "unconfirmed");
  const error = JB.el("div", { class: "error" });
  const controls = [];
  const send = async (action, body) => {
    S.unseen.delete(i.id);  // acting on it is looking at it
    for (const c of controls) c.disabled = true;
    error.textContent = "";
    try {
      S.incidents.set(i.id, await JB.api(`/api/incidents/${encodeURIComponent(i.id)}/${action}`, { method: "POST", body }));
      refreshIncidents();
    } catch (e) {
      error.textContent = `${action === "confirm" ? "确认" : "忽略"}失败：${e.message}`;
      for (const c of controls) c.disabled = false;
    }
  };
  const types = [...new Set([i.type, ...COMMON_TYPES])].filter((t) => t !== "other");  // the guess first; 其他 in the list
  const typeButton = (type) => JB.el("button", { class: `type${type === i.type ? " guessed" : ""}`, "data-type": type,
    title: `确认为“${JB.label("type", type)}”并按规则派警`, onclick: () => send("confirm", { type }) }, JB.label("type", type));
  const more = JB.el("select", { "aria-label": "更多类型", title: "其他类型：选中即确认并派警" },
    JB.el("option", { value: "" }, "更多类型…"),
    Object.keys(JB.LABELS.type).filter((t) => !types.includes(t)).map((t) => JB.el("option", { value: t }, JB.label("type", t))));
  more.onchange = () => { if (more.value) send("confirm", { type: more.value }); };
  // dismissing takes a second click: a report must not vanish by a slip of the mouse
  const dismiss = JB.el("button", { class: "danger dismiss", title: "不是警情：忽略，不派警" }, "忽略");
  let armed = null;
  dismiss.onclick = () => {
    if (armed) { clearTimeout(armed); armed = null; send("dismiss", {}); return; }
    dismiss.textContent = "确认忽略？";
    armed = setTimeout(() => { armed = null; dismiss.textContent = "忽略"; }, 4000);
  };
  controls.push(...types.map(typeButton), more, dismiss);
  const last = i.utterance_ids[i.utterance_ids.length - 1];
  const classes = ["incident", "pending", `p-${i.priority}`, overdue && "overdue", fresh && "fresh",
                   S.unseen.has(i.id) && "unseen", S.selected === i.id && "selected"].filter(Boolean).join(" ");
  const select = (e) => { if (!e.target.closest("button, select")) selectIncident(i.id); };
  return JB.el("div", { id: `inc-${i.id}`, class: classes, "data-incident": i.id, onclick: select, title: "点击在地图上查看" },
    JB.el("div", { class: "title" },
      JB.el("span", { class: `tag ${i.priority}` }, JB.label("priority", i.priority)),
      JB.el("span", { class: "guess" }, i.type === "other" ? "类型不明" : `疑似${JB.label("type", i.type)}`),
      JB.el("span", { class: "place" }, i.place_name ? `@ ${i.place_name}${i.detail ? " " + i.detail : ""}` : "地点不明"),
      overdue ? JB.el("span", { class: "tag overdue" }, "超时未确认") : null),
    JB.el("div", { class: "muted" }, `${JB.time(i.created_at)} · ${S.names[i.channel] || i.channel}${i.reports > 1 ? ` · ${i.reports} 次报警` : ""}`),
    JB.el("div", { class: "said" }, JB.readable(i), " ", last ? JB.audioButton(last) : null),
    JB.el("div", { class: "types" }, controls),
    error);
}

function chooseResponders(incident) {
  const dialog = document.getElementById("dispatch-dialog").content.firstElementChild.cloneNode(true);
  const near = S.responders.map((r) => ({ ...r, d: incident.lat == null ? null : metres(incident, r) }))
    .sort((a, b) => (a.d ?? 1e12) - (b.d ?? 1e12));
  dialog.querySelector(".choices").append(...near.map((r) => JB.el("div", { "data-responder": r.id },
    JB.el("label", {}, JB.el("input", { type: "checkbox", value: r.id, checked: incident.assigned.includes(r.id) }),
      ` ${r.name}（${JB.label("role", r.role)}）${r.d == null ? "" : " " + JB.distance(r.d)}`),
    " ", statusPicker(r))));
  document.body.append(dialog);
  dialog.showModal();
  return new Promise((resolve, reject) => {
    dialog.addEventListener("close", async () => {
      const chosen = [...dialog.querySelectorAll("input:checked")].map((x) => x.value);
      dialog.remove();
      if (dialog.returnValue !== "ok" || !chosen.length) return resolve(S.incidents.get(incident.id));
      try { resolve(await JB.api(`/api/incidents/${incident.id}/dispatch`, { method: "POST", body: { responders: chosen } })); }
      catch (e) { reject(e); }
    });
  });
}

// The responder's status, which the operator may set for them (as the responder's own status message would: on the
// map and in the next ranking at once), and the incident an acknowledgement made them busy on.
function statusPicker(responder) {
  let current = responder.status;
  const pick = JB.el("select", { "aria-label": `${responder.name}的状态` },
    Object.entries(JB.LABELS.responder_status).map(([status, label]) => JB.el("option", { value: status, selected: status === current }, label)));
  const busyOn = JB.el("span", { class: "muted" });
  const showBusyOn = (incidentId) => {
    const i = incidentId && S.incidents.get(incidentId);
    busyOn.textContent = !incidentId ? "" : ` 正在处置：${i ? JB.incidentTitle(i) : incidentId}`;
  };
  showBusyOn(responder.incident_id);
  pick.onchange = async () => {
    pick.disabled = true;
    try {
      const row = await JB.api(`/api/responders/${encodeURIComponent(responder.id)}/status`, { method: "POST", body: { status: pick.value } });
      current = row.status;
      showBusyOn(row.incident_id);
      S.responders = S.responders.map((r) => (r.id === row.id ? row : r));
      S.map?.setResponders(S.responders);
    } catch (e) { pick.value = current; alert(`状态未更改：${e.message}`); }
    pick.disabled = false;
  };
  return JB.el("span", {}, pick, busyOn);
}

function metres(a, b) {
  const rad = Math.PI / 180, dl = (b.lat - a.lat) * rad, dn = (b.lon - a.lon) * rad;
  const h = Math.sin(dl / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dn / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(h));
}

// --- activity strips -----------------------------------------------------------------------------------------

function countActivity(u) {
  const a = S.activity;
  if (!a || !a.counts[u.channel]) return;
  shiftActivity();
  const i = Math.floor((u.start - a.start) / a.bucket_s);
  if (i >= 0 && i < a.counts[u.channel].length) a.counts[u.channel][i] += 1;
  drawActivity();
}

function shiftActivity() {  // keep the window ending now: drop old buckets, add empty new ones
  const a = S.activity, n = Object.values(a.counts)[0]?.length || 0;
  const behind = Math.floor((Date.now() / 1000 - (a.start + n * a.bucket_s)) / a.bucket_s) + 1;
  if (behind <= 0) return;
  for (const k of Object.keys(a.counts)) a.counts[k] = [...a.counts[k].slice(Math.min(behind, n)), ...new Array(Math.min(behind, n)).fill(0)];
  a.start += behind * a.bucket_s;
}

// Each channel card's strip: one bar per minute of the last hour (now at the right), all on one scale so that
// busy and quiet channels compare at a glance.
function drawActivity() {
  const a = S.activity;
  if (!a) return;
  shiftActivity();
  const max = Math.max(1, ...Object.values(a.counts).flat());
  for (const [id, counts] of Object.entries(a.counts)) {
    const canvas = document.querySelector(`#ch-${CSS.escape(id)} canvas.spark`);
    if (!canvas) continue;
    const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr;
    canvas.height = h * dpr;
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.fillStyle = "#0b1118";
    g.fillRect(0, 0, w, h);
    const step = w / counts.length;
    counts.forEach((c, i) => {
      if (!c) return;
      const bar = Math.max(2, (c / max) * (h - 2));
      g.fillStyle = i === counts.length - 1 ? "#e8eef5" : "#3fa7ff";
      g.fillRect(i * step + 0.5, h - bar, Math.max(1, step - 1), bar);
    });
    const total = counts.reduce((x, y) => x + y, 0);
    canvas.title = `近 60 分钟 ${total} 次通话（每格 1 分钟，最右为现在；最高 ${max} 次/分钟）`;
  }
}

main().catch((e) => { if (e.message !== "role refused") console.error(e); });
