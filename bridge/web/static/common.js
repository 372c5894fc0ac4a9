// Shared by every jingbao page: the API, login, WebSockets, audio capture and playback, Chinese labels, and the
// readable rendering of transcripts. No framework, no external resource: command rooms are often offline.
"use strict";

const JB = {};

JB.LABELS = {
  type: { weapon: "持械", robbery: "抢劫", fire: "火情", domestic: "家庭纠纷", fight: "打架斗殴", medical: "急救",
          missing: "人员走失", theft: "盗窃", fraud: "诈骗", gathering: "聚集", suspicious: "可疑情况",
          traffic: "交通", dispute: "纠纷", noise: "噪音扰民", other: "其他", sos: "SOS紧急求助" },
  priority: { critical: "紧急", high: "高", medium: "中", low: "低", none: "无" },
  status: { needs_confirmation: "待确认", reported: "已发现", dispatched: "已派警", acknowledged: "已确认", on_scene: "已到场",
            resolved: "已处置", followed_up: "已回访", closed_false_alarm: "误报关闭", dismissed: "已忽略", retracted: "已撤销" },
  role: { guard: "保安", officer: "民警", chief: "社区警长", volunteer: "义警", grid_worker: "网格员",
          operator: "调度员", auditor: "审计员", admin: "管理员" },
  ack: { ack: "已确认", on_scene: "已到场", declined: "已拒绝" },
  responder_status: { available: "在岗", busy: "忙碌", off_duty: "下班" },
  reason: { guard: "最近保安", grid_chief: "网格警长", police: "民警", assigned: "调度指派", grid_chief_follow_up: "回访警长",
            nearest: "最近" },
  timeline: { reported: "发现", status: "状态", alerted: "派警", escalated: "升级派警", ack: "回复", note: "备注",
              reassigned: "改派", merged: "重复报警", unanswered: "无人应答", confirmed: "确认类型", unconfirmed: "超时未确认",
              final: "最终文本确认", rerouted: "按最终文本改派", placed: "下一段通话补报地点", withdrawn: "撤回派警", requeued: "转待确认", updated: "通知更新",
              sos: "SOS报警", sos_repeated: "再次SOS", sos_hot_mic: "现场录音", sos_acknowledged: "调度员确认SOS",
              task: "推送任务", dispute_step: "纠纷处置进展" },
  // why a responder was stood down from a provisional alert (the retraction's `change`)
  withdrawn: { retracted: "已撤销：最终文本不是报警", rerouted: "已撤回：按最终文本改派他人，无需前往",
               requeued: "已撤回：类型待调度员确认", merged: "已撤销：与另一警情合并" },
};

// 初报: raised from the live transcript while the caller was still talking; the final transcript is not in yet.
JB.PROVISIONAL = "初报·未确认最终文本";

JB.PRIORITY_ORDER = { critical: 0, high: 1, medium: 2, low: 3, none: 4 };
// incident statuses still being handled (待确认 included: it awaits an operator)
JB.OPEN = new Set(["needs_confirmation", "reported", "dispatched", "acknowledged", "on_scene"]);

JB.label = (kind, key) => (JB.LABELS[kind] && JB.LABELS[kind][key]) || key || "";

// What an incident is, in a word: its type, or 待确认 while an operator has not confirmed the machine's guess.
JB.incidentWhat = (i) => (i.status === "needs_confirmation" ? JB.label("status", i.status) : JB.label("type", i.type));

// An incident in a few words: where and what (`万寿路花鸟市场 急救`).
JB.incidentTitle = (i) => `${i.place_name || "地点不明"} ${JB.incidentWhat(i)}`;

JB.el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
};

JB.api = async (path, { method = "GET", body } = {}) => {
  const res = await fetch(path, {
    method, credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) { JB.toLogin(); throw new Error("未登录"); }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.detail) || `${res.status} ${res.statusText}`);
  return data;
};

JB.toLogin = () => { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; };

// The logged-in user, or off to the login page; a user whose role may not use this page is told so.
JB.session = async (roles) => {
  const me = await JB.api("/api/me");
  if (roles && !roles.includes(me.role) && me.role !== "admin") {
    document.body.replaceChildren(JB.el("div", { class: "refused" }, `${JB.label("role", me.role)}（${me.name}）无权使用本页面。`,
      JB.el("a", { href: "/login" }, "换个账号登录")));
    throw new Error("role refused");
  }
  const who = document.getElementById("who");
  if (who) who.replaceChildren(`${me.name}（${JB.label("role", me.role)}）`,
    JB.el("button", { class: "small", onclick: async () => { await JB.api("/api/logout", { method: "POST" }); JB.toLogin(); } }, "退出"));
  return me;
};

JB.wsUrl = (path) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

// A WebSocket that comes back after the server restarts or the network blinks.
JB.liveSocket = (path, onMessage, onState = () => {}) => {
  let delay = 500;
  const open = () => {
    const ws = new WebSocket(JB.wsUrl(path));
    ws.onopen = () => { delay = 500; onState(true); };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data));
    ws.onclose = () => { onState(false); setTimeout(open, delay); delay = Math.min(delay * 2, 10000); };
  };
  open();
};

JB.time = (ts) => new Date(ts * 1000).toLocaleTimeString("zh-CN", { hour12: false });
JB.dateTime = (ts) => new Date(ts * 1000).toLocaleString("zh-CN", { hour12: false });
JB.distance = (m) => (m === null || m === undefined ? "" : m >= 1000 ? `${(m / 1000).toFixed(1)} 公里` : `${Math.round(m)} 米`);

// --- transcripts ------------------------------------------------------------------------------------------------

const TONE_MARKS = { a: "āáǎà", e: "ēéěè", i: "īíǐì", o: "ōóǒò", u: "ūúǔù", v: "ǖǘǚǜ" };

// "mei3" -> "měi": tone-numbered pinyin is how engines write it, tone marks are how people read it.
JB.toneMark = (syllable) => {
  const m = /^([a-zü:]+)([1-5])$/i.exec(syllable);
  if (!m) return syllable;
  const base = m[1].replace(/u:|ü/g, "v"), tone = Number(m[2]);
  if (tone === 5) return base.replace(/v/g, "ü");
  const at = base.search(/[ae]/) >= 0 ? base.search(/[ae]/) : base.includes("ou") ? base.indexOf("o")
    : Math.max(...[..."iouv"].map((v) => base.lastIndexOf(v)));
  if (at < 0) return base.replace(/v/g, "ü");
  return (base.slice(0, at) + TONE_MARKS[base[at]][tone - 1] + base.slice(at + 1)).replace(/v/g, "ü");
};

// A transcript as people read it: its Chinese characters (the engine's own text, or those decoded from the on-board
// engine's pinyin, with the syllables heard on a line under them); with neither (a transcript stored before the
// decoder, or one without characters), the spotted keywords as their Chinese names in place of the syllables they
// cover, the rest as tone-marked pinyin.
JB.pinyinText = (pinyin) => (pinyin || "").split(/\s+/).map(JB.toneMark).join(" ");
JB.readable = (t) => {
  const chars = t.readable || t.text;
  if (chars && t.pinyin && !(t.engine && t.text)) {  // decoded from pinyin (an incident keeps no engine: show both)
    return JB.el("span", { class: "decoded" }, JB.el("span", { class: "zh" }, chars), " ",
      JB.el("span", { class: "py heard" }, JB.pinyinText(t.pinyin)));
  }
  if (chars) return JB.el("span", { class: "zh" }, chars);
  const words = t.words || [], keywords = [...(t.keywords || [])].sort((a, b) => a.start - b.start);
  const out = JB.el("span", { class: "py" });
  if (!words.length) {
    out.append(JB.pinyinText(t.pinyin));
    for (const k of keywords) out.append(" ", JB.el("b", { class: "kw" }, k.label));
    return out;
  }
  const used = new Set();
  words.forEach((w) => {
    const mid = (w.start + w.end) / 2;
    const k = keywords.find((kw) => mid >= kw.start - 0.05 && mid <= kw.end + 0.05);
    if (k) {
      if (!used.has(k)) { used.add(k); out.append(JB.el("b", { class: "kw" }, k.label), " "); }
    } else out.append(JB.toneMark(w.text), " ");
  });
  for (const k of keywords) if (!used.has(k)) out.append(JB.el("b", { class: "kw" }, k.label), " ");
  return out;
};

JB.audioButton = (utteranceId) => {
  const audio = new Audio();
  audio.preload = "none";
  const button = JB.el("button", { class: "play", title: "播放原始录音", "data-utterance": utteranceId }, "▶ 播放");
  button.addEventListener("click", () => {
    if (!audio.src) audio.src = `/api/utterances/${encodeURIComponent(utteranceId)}/audio`;
    if (audio.paused) audio.play().catch((e) => { button.textContent = "无法播放"; console.warn(e); });
    else audio.pause();
  });
  audio.onplay = () => { button.textContent = "■ 停止"; button.classList.add("playing"); };
  audio.onpause = audio.onended = () => { button.textContent = "▶ 播放"; button.classList.remove("playing"); };
  return button;
};

// --- audio ------------------------------------------------------------------------------------------------------

JB.audioContext = async () => {
  if (!JB._ctx) {
    JB._ctx = new AudioContext({ sampleRate: 16000 }); // the browser resamples the microphone and the speaker for us
    await JB._ctx.audioWorklet.addModule("/static/audio-worklets.js");
  }
  if (JB._ctx.state === "suspended") await JB._ctx.resume();
  return JB._ctx;
};

// A microphone that streams 16 kHz int16 PCM to `onChunk` while `active` is set; opened once, kept for the session.
JB.microphone = async () => {
  const ctx = await JB.audioContext();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
  });
  const node = new AudioWorkletNode(ctx, "pcm-capture");
  ctx.createMediaStreamSource(stream).connect(node);
  const mic = { onChunk: null };
  node.port.onmessage = (e) => { if (mic.onChunk) mic.onChunk(e.data); };
  return mic;
};

// One press of a talk button: opens `path`, sends the microphone's PCM until release(), then "end".
// Audio captured before the socket is open is kept and sent first, so the first syllable is not lost.
JB.press = (mic, path, onMessage = () => {}) => {
  const ws = new WebSocket(JB.wsUrl(path));
  ws.binaryType = "arraybuffer";
  const early = [];
  let sent = 0;
  mic.onChunk = (buf) => {
    if (ws.readyState === WebSocket.OPEN) { ws.send(buf); sent += buf.byteLength; }
    else if (ws.readyState === WebSocket.CONNECTING) early.push(buf);  // closed (a busy channel): dropped
  };
  ws.onopen = () => { for (const b of early.splice(0)) { ws.send(b); sent += b.byteLength; } };
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
  const done = new Promise((resolve) => { ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, bytes: sent }); });
  return {
    release() {
      mic.onChunk = null;
      const finish = () => ws.send("end");
      if (ws.readyState === WebSocket.OPEN) finish(); else ws.addEventListener("open", finish, { once: true });
      return done;
    },
    done,
  };
};

// Live audio of a channel: the server's 20 ms frames into a PcmPlayer. Returns a function that stops it.
JB.listen = async (channelId) => {
  const ctx = await JB.audioContext();
  const node = new AudioWorkletNode(ctx, "pcm-player");
  node.connect(ctx.destination);
  node.port.onmessage = (e) => { JB.stats.played += e.data.played; };
  const ws = new WebSocket(JB.wsUrl(`/api/channels/${encodeURIComponent(channelId)}/listen`));
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => { JB.stats.listenBytes += e.data.byteLength; node.port.postMessage(e.data, [e.data]); };
  return () => { ws.close(); node.disconnect(); };
};

// What the page's audio has done, for the operator's status line and for the browser tests.
JB.stats = { listenBytes: 0, played: 0, alarms: 0, lastAlarm: null };

// The alarm's own AudioContext: created once, resumed by the first click on the page (browsers keep audio
// suspended until the user has interacted with it).
JB.alarmContext = () => {
  if (!JB._alarmCtx) {
    JB._alarmCtx = new AudioContext();
    document.addEventListener("pointerdown", () => JB._alarmCtx.resume(), true);
  }
  return JB._alarmCtx;
};

// Browsers keep sound off until the page has been clicked once: `hint` says so until then, since the alarm
// depends on it (a click anywhere, the hint itself included, turns sound on).
JB.soundHint = (hint) => {
  const ctx = JB.alarmContext();
  const update = () => { hint.hidden = ctx.state === "running"; };
  ctx.addEventListener("statechange", update);
  update();
};

// A short alarm tone (no audio file needed): `times` beeps, louder and higher for critical incidents.
JB.alarm = (critical = false, times = 3) => {
  try {
    const ctx = JB.alarmContext();
    for (let i = 0; i < times; i++) {
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = critical ? 1200 : 880;
      gain.gain.value = critical ? 0.3 : 0.15;
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + i * 0.35);
      osc.stop(ctx.currentTime + i * 0.35 + 0.22);
    }
    JB.stats.alarms += 1;
    JB.stats.lastAlarm = { critical, times, audio: ctx.state };
  } catch (e) { console.warn("alarm", e); }  // no audio device: the banner and the highlight still show
};
