// The console's 任务 panel (tasks with sign-off, dispatch/tasks.py): send an instruction to people, groups, channels,
// grids or units (to their phones and on the air), see per task who has and has not signed off (签收) and what they
// reported back (反馈), remind those who have not; push a dispute to its grid's officer and follow its lifecycle.
// Fed by GET /api/tasks at load and by the console's live feed (topic "task", console.js).
"use strict";

const T = { tasks: new Map(), targets: [], chosen: [], stages: [], timer: null };
const DEADLINES = [[5, "5 分钟"], [15, "15 分钟"], [30, "30 分钟"], [60, "1 小时"], [120, "2 小时"], [480, "8 小时"], [1440, "24 小时"]];
const TARGET_GROUPS = [["all", "全体"], ["group:", "按角色"], ["channel:", "按频道"], ["grid:", "按网格"], ["unit:", "按单位"],
                       ["person:", "按人员"]];
const FEEDBACK_KIND = { text: "文字", photo: "照片", voice: "语音" };

async function initTasks() {
  if ((await consoleState).central) return;  // console.js: tasks are each station's, on its own box
  const button = document.getElementById("tasks-toggle");
  button.addEventListener("click", () => showTasks(document.getElementById("tasks-panel").hidden));
  document.getElementById("tasks-close").addEventListener("click", () => showTasks(false));
  const [{ targets, stages }, { tasks }] = await Promise.all([JB.api("/api/tasks/targets"), JB.api("/api/tasks")]);
  T.targets = targets;
  T.stages = stages;
  for (const t of tasks) T.tasks.set(t.id, t);
  buildForm();
  renderTasks();
  T.timer = setInterval(renderTasks, 15000);  // deadlines pass and follow-ups fall due with nobody acting
  button.disabled = false;
}

function showTasks(show) {
  document.getElementById("tasks-panel").hidden = !show;
  document.getElementById("tasks-toggle").classList.toggle("on", show);
}

// A task created, signed, reported on, reminded or moved on (the live feed): its latest view.
function onTaskEvent(task) {
  T.tasks.set(task.id, task);
  renderTasks();
}

// A dispute incident pushed to the grid answering for its place (the incident card's 推送网格).
function pushDispute(incident) {
  showTasks(true);
  const form = document.getElementById("task-form");
  form.elements.kind.value = "dispute";
  form.elements.text.value = `${incident.place_name || ""}${incident.detail || ""}：${incident.text || ""}`.slice(0, 200);
  form.dataset.incident = incident.id;
  T.chosen = [];
  syncForm();
  form.elements.text.focus();
}

function buildForm() {
  const form = document.getElementById("task-form");
  const pick = form.elements.target;
  pick.replaceChildren(JB.el("option", { value: "" }, "选择接收对象…"), ...TARGET_GROUPS.map(([prefix, label]) =>
    JB.el("optgroup", { label }, T.targets.filter((t) => (prefix === "all" ? t.key === "all" : t.key.startsWith(prefix)))
      .map((t) => JB.el("option", { value: t.key }, `${t.label}（${t.count} 人）`)))));
  pick.addEventListener("change", () => {
    if (pick.value && !T.chosen.includes(pick.value)) T.chosen.push(pick.value);
    pick.value = "";
    syncForm();
  });
  form.elements.deadline.replaceChildren(...DEADLINES.map(([min, label]) => JB.el("option", { value: min, selected: min === 30 }, label)));
  form.elements.kind.addEventListener("change", () => { delete form.dataset.incident; syncForm(); });
  form.addEventListener("submit", sendTask);
  syncForm();
}

// What the form shows for its kind: an instruction goes to anyone chosen; a dispute to one grid (or its incident's).
function syncForm() {
  const form = document.getElementById("task-form");
  const dispute = form.elements.kind.value === "dispute";
  form.querySelector(".follow-up").hidden = !dispute;
  if (dispute) T.chosen = T.chosen.filter((k) => k.startsWith("grid:")).slice(-1);
  const label = (key) => (T.targets.find((t) => t.key === key) || { label: key }).label;
  const chips = T.chosen.map((key) => JB.el("span", { class: "chip" }, label(key),
    JB.el("button", { type: "button", class: "small", title: "移除", onclick: () => { T.chosen = T.chosen.filter((k) => k !== key); syncForm(); } }, "×")));
  if (dispute && !T.chosen.length && form.dataset.incident) chips.push(JB.el("span", { class: "chip" }, "警情所在网格的民警"));
  document.getElementById("task-chosen").replaceChildren(...chips);
}

async function sendTask(e) {
  e.preventDefault();
  const form = e.currentTarget, out = document.getElementById("task-error");
  const followUp = form.elements.kind.value === "dispute" && form.elements.follow_up.value;
  const body = {
    kind: form.elements.kind.value, text: form.elements.text.value.trim(), targets: T.chosen,
    deadline_s: Number(form.elements.deadline.value) * 60, announce: form.elements.announce.checked,
    incident_id: form.dataset.incident || undefined,
    follow_up_at: followUp ? new Date(followUp).getTime() / 1000 : undefined,
  };
  try {
    const task = await JB.api("/api/tasks", { method: "POST", body });
    T.tasks.set(task.id, task);
    T.chosen = [];
    form.elements.text.value = "";
    form.elements.kind.value = "instruction";
    delete form.dataset.incident;
    out.textContent = task.announced.length ? `已发送，并在 ${task.announced.length} 个频道语音播报` : "已发送";
    syncForm();
    renderTasks();
  } catch (err) { out.textContent = `未发送：${err.message}`; }
}

// Those needing the operator first (past the deadline unsigned, a follow-up due), then the open ones, newest first.
function renderTasks() {
  const rank = (t) => (t.status !== "open" ? 2 : t.overdue || t.follow_up_due ? 0 : 1);
  const tasks = [...T.tasks.values()].sort((a, b) => rank(a) - rank(b) || b.created_at - a.created_at);
  const open = tasks.filter((t) => t.status === "open");
  const alarming = open.filter((t) => rank(t) === 0).length;
  const badge = document.getElementById("tasks-badge");
  badge.textContent = alarming ? `${alarming} 逾期/到期` : `${open.length}`;
  badge.classList.toggle("alarm", alarming > 0);
  document.getElementById("task-list").replaceChildren(...(tasks.length ? tasks.map(taskCard)
    : [JB.el("p", { class: "muted" }, "暂无任务")]));
}

function taskCard(t) {
  const now = Date.now() / 1000;
  const act = (label, fn, cls = "") => JB.el("button", { class: `small ${cls}`, onclick: async () => {
    try { const r = await fn(); if (r) onTaskEvent(r.task || r); } catch (e) { alert(e.message); }
  } }, label);
  const unsigned = t.recipients.filter((r) => !r.signed_at);
  const left = t.deadline - now;
  const due = t.status !== "open" ? "" : left > 0 ? `距签收时限 ${Math.ceil(left / 60)} 分钟` : "已过签收时限";
  const classes = ["task", t.status, t.overdue && "overdue", t.follow_up_due && "follow-up-due"].filter(Boolean).join(" ");
  return JB.el("div", { class: classes, "data-task": t.id },
    JB.el("div", { class: "title" },
      JB.el("span", { class: `tag ${t.kind}` }, t.kind === "dispute" ? "矛盾纠纷" : "指令"),
      JB.el("span", { class: "text" }, t.text),
      t.status !== "open" ? JB.el("span", { class: "tag" }, t.status === "cancelled" ? "已撤销" : "已结案") : null),
    JB.el("div", { class: "muted" }, `${JB.time(t.created_at)} ${t.created_by} → ${t.targets.map((x) => x.label).join("、")}`,
      t.announced.length ? " · 已语音播报" : "", t.incident_id ? ` · 警情 ${t.incident_id}` : ""),
    JB.el("div", { class: "progress" },
      JB.el("span", { class: "signed-count" }, `已签收 ${t.signed}/${t.total}`),
      JB.el("span", { class: t.overdue ? "late" : "muted" }, due),
      signedBar(t)),
    t.kind === "dispute" ? TASKS.lifecycle(t, T.stages, onTaskEvent, alert) : null,
    recipientList(t),
    JB.el("div", { class: "actions" },
      t.status === "open" && unsigned.length ? act(`提醒未签收（${unsigned.length}）`, () => JB.api(`/api/tasks/${t.id}/remind`, { method: "POST" })) : null,
      t.status === "open" ? act("撤销", () => confirm("撤销此任务？接收人将收到撤销通知") && JB.api(`/api/tasks/${t.id}/cancel`, { method: "POST" }), "danger") : null));
}

// (a style property, not a style attribute: the pages' Content Security Policy refuses inline styles)
function signedBar(t) {
  const filled = JB.el("span");
  filled.style.width = `${t.total ? (100 * t.signed) / t.total : 0}%`;
  return JB.el("span", { class: "bar" }, filled);
}

// Each recipient on a row of his own; for a task sent to many (全体, a group), those with nothing to show yet (not
// signed, not reminded) are named on one line instead, so a glance still finds who answered and who is late.
const ROWS_MAX = 8;
function recipientList(t) {
  const quiet = t.recipients.length > ROWS_MAX ? t.recipients.filter((r) => !r.signed_at && !r.reminders) : [];
  const rows = t.recipients.filter((r) => !quiet.includes(r));
  return JB.el("ul", { class: "recipients" }, rows.map(recipientRow(t)),
    quiet.length ? JB.el("li", { class: `unsigned-many${t.overdue ? " overdue" : ""}` },
      JB.el("span", { class: "state" }, `${t.overdue ? "✗ 逾期未签收" : "未签收"} ${quiet.length} 人：`),
      JB.el("span", { class: "names" }, quiet.map((r) => r.name).join("、"))) : null);
}

function recipientRow(t) {
  return (r) => JB.el("li", { class: r.signed_at ? "signed" : r.overdue ? "overdue" : "", "data-responder": r.id },
    JB.el("span", { class: "who" }, `${r.name}（${JB.label("role", r.role)}）`),
    JB.el("span", { class: "state" }, r.signed_at ? `✓ 已签收 ${JB.time(r.signed_at)}` : r.overdue ? "✗ 逾期未签收" : "未签收"),
    r.late ? JB.el("span", { class: "tag late" }, "逾期签收") : null,
    r.reminders ? JB.el("span", { class: "tag reminded", title: `最近提醒 ${JB.time(r.reminded_at)}` }, `已提醒 ${r.reminders} 次`) : null,
    r.feedback.length ? JB.el("div", { class: "feedback" }, r.feedback.map((f) => feedbackItem(t, f))) : null);
}

function feedbackItem(t, f) {
  const file = `/api/tasks/${encodeURIComponent(t.id)}/feedback/${f.id}/file`;
  return JB.el("div", { class: `fb ${f.kind}` },
    JB.el("span", { class: "muted" }, `${JB.time(f.created_at)} ${FEEDBACK_KIND[f.kind]}：`),
    f.text ? JB.el("span", {}, f.text) : null,
    f.kind === "photo" && f.has_file ? JB.el("a", { href: file, target: "_blank", rel: "noopener" },
      JB.el("img", { src: file, alt: "反馈照片", loading: "lazy" })) : null,
    f.kind === "voice" && f.has_file ? JB.el("audio", { src: file, controls: true, preload: "none" }) : null);
}

initTasks().catch((e) => console.warn("tasks", e));
