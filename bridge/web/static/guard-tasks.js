// The phone page's 我的任务 (tasks with sign-off, dispatch/tasks.py): the operator's instructions sent to me, 签收 with
// one tap, 反馈 in words, with a photo (shrunk on the phone to what the server takes) or a voice note (held like the
// talk button; the server's recogniser writes it down). An officer records the steps of a dispute pushed to him.
"use strict";

const MT = { known: null, stages: [], recording: null };
const MT_POLL_MS = 10000;
const UPLOAD_MAX_BYTES = 1000000;  // the server's limit on an upload (UPLOAD_MAX_BYTES in bridge/web/routes_tasks.py)
const PHOTO_MAX_SIDE = 1600;
const VOICE_MAX_MS = 30000;  // a WAV of 16 kHz int16 is 32 kB a second: 30 s stay under UPLOAD_MAX_BYTES

async function loadMyTasks() {
  const list = document.getElementById("my-tasks");
  if (!list) return;  // not this user's page (guard.js said so)
  let data;
  try { data = await JB.api("/api/me/tasks"); } catch (e) { list.textContent = e.message; return; }
  MT.stages = data.stages;
  const fresh = MT.known ? data.tasks.filter((t) => !MT.known.has(t.id)) : [];
  MT.known = new Set(data.tasks.map((t) => t.id));
  if (fresh.length) { JB.alarm(false, 2); navigator.vibrate?.([300, 150, 300]); }
  if (MT.recording) return;  // redrawn after the voice note is sent, not under the thumb holding its button
  list.replaceChildren(...(data.tasks.length ? data.tasks.map((t) => myTaskCard(t, fresh.includes(t)))
    : [JB.el("p", { class: "muted" }, "暂无任务")]));
}

function myTaskCard(t, fresh) {
  const me = t.mine || {};
  const state = JB.el("div", { class: "state muted" });
  const caption = JB.el("textarea", { rows: 2, maxlength: 1000, placeholder: "反馈内容（文字；拍照时作为说明）", "aria-label": "反馈内容" });
  const act = (fn) => async () => {
    try { await fn(); await loadMyTasks(); } catch (e) { state.textContent = `未发送：${e.message}`; }
  };
  const closed = t.status !== "open";
  const classes = ["my-task", !me.signed_at && "unsigned", me.overdue && "overdue", fresh && "fresh"].filter(Boolean).join(" ");
  return JB.el("div", { class: classes, "data-task": t.id },
    JB.el("div", { class: "text" }, t.text),
    JB.el("div", { class: "muted" }, `${t.kind === "dispute" ? "矛盾纠纷 · " : ""}${JB.time(t.created_at)} ${t.created_by} 发 · 签收时限 ${JB.dateTime(t.deadline)}`),
    me.signed_at ? JB.el("div", { class: "signed" }, `已签收 ${JB.time(me.signed_at)}${me.late ? "（逾期）" : ""}`)
      : JB.el("button", { class: "primary sign", disabled: closed, onclick: act(() => JB.api(`/api/me/tasks/${t.id}/sign`, { method: "POST" })) },
        me.overdue ? "签收（已逾期）" : "签收"),
    t.kind === "dispute" ? TASKS.lifecycle(t, MT.stages, loadMyTasks, (message) => { state.textContent = message; }) : null,
    (me.feedback || []).length ? JB.el("ul", { class: "mine-feedback" }, me.feedback.map((f) =>
      JB.el("li", {}, `${JB.time(f.created_at)} ${{ text: "文字", photo: "照片", voice: "语音" }[f.kind]}：${f.text || "（无说明）"}`))) : null,
    closed ? null : caption,
    closed ? null : JB.el("div", { class: "buttons" },
      JB.el("button", { onclick: act(async () => {
        if (!caption.value.trim()) throw new Error("请先写反馈内容");
        await JB.api(`/api/me/tasks/${t.id}/feedback`, { method: "POST", body: { text: caption.value.trim() } });
      }) }, "文字反馈"),
      JB.el("label", { class: "button" }, "拍照反馈",
        JB.el("input", { type: "file", accept: "image/*", capture: "environment", onchange: (e) => act(async () => {
          state.textContent = "正在上传照片…";
          const photo = await shrink(e.target.files[0]);
          await upload(`/api/me/tasks/${t.id}/photo?text=${encodeURIComponent(caption.value.trim().slice(0, 200))}`, photo);
        })() })),
      voiceButton(t, state)),
    state);
}

// 按住录音: the microphone's 16 kHz PCM while held, sent as a WAV file when let go.
function voiceButton(t, state) {
  const button = JB.el("button", { class: "voice" }, "按住录音反馈");
  button.addEventListener("pointerdown", async (e) => {
    e.preventDefault();
    if (MT.recording || G.press || G.hotMic) return;  // one use of the microphone at a time
    button.setPointerCapture?.(e.pointerId);
    const rec = { chunks: [], started: Date.now(), button };
    MT.recording = rec;
    try { G.mic = G.mic || await JB.microphone(); } catch (err) { MT.recording = null; state.textContent = `无法打开麦克风：${err.message}`; return; }
    if (MT.recording !== rec) return;  // let go while the microphone opened
    G.mic.onChunk = (buf) => rec.chunks.push(buf);
    button.classList.add("on");
    button.textContent = "松开发送";
    rec.timer = setTimeout(() => stopVoice(t, state), VOICE_MAX_MS);
  });
  for (const ev of ["pointerup", "pointercancel"]) button.addEventListener(ev, () => stopVoice(t, state));
  button.addEventListener("contextmenu", (e) => e.preventDefault());
  return button;
}

async function stopVoice(t, state) {
  const rec = MT.recording;
  if (!rec) return;
  MT.recording = null;
  clearTimeout(rec.timer);
  if (G.mic) G.mic.onChunk = null;
  rec.button.classList.remove("on");
  rec.button.textContent = "按住录音反馈";
  const bytes = rec.chunks.reduce((n, c) => n + c.byteLength, 0);
  if (bytes < 16000 * 2 * 0.5) { state.textContent = "录音太短：请按住按钮说话"; return; }
  state.textContent = `正在识别 ${(bytes / 32000).toFixed(1)} 秒语音…`;
  try {
    const task = await upload(`/api/me/tasks/${t.id}/voice`, wav(rec.chunks));
    const said = task.mine.feedback.filter((f) => f.kind === "voice").pop();
    await loadMyTasks();
    const card = document.querySelector(`.my-task[data-task="${CSS.escape(t.id)}"] .state`);
    if (card) card.textContent = `语音已发送，识别为：${said ? said.text || "（未识别出文字）" : ""}`;
  } catch (e) { state.textContent = `语音未发送：${e.message}`; }
}

function wav(chunks) {
  const bytes = chunks.reduce((n, c) => n + c.byteLength, 0);
  const head = new DataView(new ArrayBuffer(44));
  const text = (at, s) => [...s].forEach((ch, k) => head.setUint8(at + k, ch.charCodeAt(0)));
  text(0, "RIFF"); head.setUint32(4, 36 + bytes, true); text(8, "WAVE"); text(12, "fmt ");
  head.setUint32(16, 16, true); head.setUint16(20, 1, true); head.setUint16(22, 1, true);
  head.setUint32(24, 16000, true); head.setUint32(28, 32000, true); head.setUint16(32, 2, true); head.setUint16(34, 16, true);
  text(36, "data"); head.setUint32(40, bytes, true);
  return new Blob([head, ...chunks], { type: "audio/wav" });
}

// A phone's photo is several MB: drawn again at most PHOTO_MAX_SIDE pixels wide as a JPEG under the server's limit.
async function shrink(file) {
  if (!file) throw new Error("没有选择照片");
  const image = await createImageBitmap(file);
  for (let side = PHOTO_MAX_SIDE; side >= 400; side = Math.round(side * 0.7)) {
    const scale = Math.min(1, side / Math.max(image.width, image.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(image.width * scale);
    canvas.height = Math.round(image.height * scale);
    canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.8));
    if (blob && blob.size <= UPLOAD_MAX_BYTES) return blob;
  }
  throw new Error("照片太大");
}

async function upload(path, blob) {
  const res = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "Content-Type": blob.type }, body: blob });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.detail) || `${res.status} ${res.statusText}`);
  return data;
}

loadMyTasks().then(() => setInterval(loadMyTasks, MT_POLL_MS));
