// What the console's 任务 panel (console-tasks.js) and the phone page's 我的任务 (guard-tasks.js) draw alike: a
// dispute's lifecycle, 发现 -> 调处 -> 跟踪 -> 联动 -> 回访, with its follow-up date, its steps and the form for the next.
"use strict";

const TASKS = {};

// Where the dispute stands, when to follow up, who did what; `onStep(result)` after a step is recorded (its form is
// shown while the dispute is open), `onError(message)` when one is refused.
TASKS.lifecycle = (t, stages, onStep, onError) => {
  const at = stages.indexOf(t.stage);
  return JB.el("div", { class: "lifecycle" },
    JB.el("ol", { class: "stages" }, stages.map((s, k) => JB.el("li", { class: k < at ? "done" : k === at ? "current" : "" }, s))),
    t.follow_up_at ? JB.el("div", { class: t.follow_up_due ? "late" : "muted" },
      `${t.follow_up_due ? "回访到期" : "下次跟进"}：${JB.dateTime(t.follow_up_at)}`) : null,
    JB.el("details", {}, JB.el("summary", {}, `处置过程（${t.steps.length}）`),
      JB.el("ol", {}, t.steps.map((s) => JB.el("li", {}, `${JB.dateTime(s.at)} ${s.stage} · ${s.actor}${s.note ? `：${s.note}` : ""}`,
        s.follow_up_at ? `（跟进 ${JB.dateTime(s.follow_up_at)}）` : "")))),
    t.status === "open" ? TASKS.stepForm(t, stages.slice(at), onStep, onError) : null);
};

// The next step: the same stage again (another visit while 跟踪) or a later one; the follow-up in days (none at 回访
// closes the dispute).
TASKS.stepForm = (t, ahead, onStep, onError) => {
  const stage = JB.el("select", { "aria-label": "阶段" }, ahead.map((s, k) => JB.el("option", { value: s, selected: k === 1 }, s)));
  const note = JB.el("input", { placeholder: "处置情况", "aria-label": "处置情况", maxlength: 500 });
  const days = JB.el("input", { type: "number", min: 1, max: 90, placeholder: "几天后跟进", "aria-label": "几天后跟进" });
  const record = async () => {
    const follow_up_at = days.value ? Date.now() / 1000 + Number(days.value) * 86400 : undefined;
    try { onStep(await JB.api(`/api/tasks/${t.id}/steps`, { method: "POST", body: { stage: stage.value, note: note.value, follow_up_at } })); }
    catch (e) { onError(`未记录：${e.message}`); }
  };
  return JB.el("div", { class: "step-form" }, stage, note, days, JB.el("button", { type: "button", onclick: record }, "记录进展"));
};
