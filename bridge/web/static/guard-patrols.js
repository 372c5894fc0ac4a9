// The phone page's 巡更签到 (patrols, dispatch/patrols.py): my routes with the round open now (or the next), which
// points are checked in, and a field for the code posted at a point (typed, or filled in by a QR/NFC reader app):
// walking past a point with 共享我的位置 on checks it in by itself. Hidden for anyone who patrols no route.
"use strict";

const MP_POLL_MS = 20000;
const MP_STATE = { upcoming: "下一轮", open: "本轮进行中", done: "本轮已完成", missed: "本轮有漏巡" };

async function loadMyPatrols() {
  const section = document.getElementById("my-patrols-area");
  if (!section) return;
  let routes;
  try { ({ routes } = await JB.api("/api/me/patrols")); } catch (e) { return; }  // not a patroller's page
  section.hidden = !routes.length;
  document.getElementById("my-patrols").replaceChildren(...routes.map(myPatrolCard));
}

function myPatrolCard(r) {
  const x = r.round;
  const checked = new Map((x ? x.checkins : []).map((c) => [c.point, c]));
  const state = JB.el("div", { class: "state muted" });
  const code = JB.el("input", { type: "text", maxlength: 64, autocomplete: "off", placeholder: "巡更点编码（扫码或输入）", "aria-label": "巡更点编码" });
  const send = async (e) => {
    e.preventDefault();
    if (!code.value.trim()) return;
    try {
      await JB.api("/api/me/patrols/checkin", { method: "POST", body: { code: code.value.trim() } });
      code.value = "";
      await loadMyPatrols();
    } catch (err) { state.textContent = `未签到：${err.message}`; }
  };
  return JB.el("div", { class: "my-patrol", "data-route": r.id },
    JB.el("strong", {}, r.name),
    JB.el("div", { class: "muted" }, x ? `${MP_STATE[x.state]} ${JB.time(x.start).slice(0, 5)}–${JB.time(x.end).slice(0, 5)}` : "今天没有排班"),
    JB.el("ol", { class: "points" }, ...r.points.map((p, i) => {
      const c = checked.get(i);
      return JB.el("li", { class: c ? "ok" : "" }, c ? `✓ ${p.name} ${JB.time(c.ts).slice(0, 5)}` : `○ ${p.name}${p.has_code ? "（可扫码）" : ""}`);
    })),
    JB.el("form", { class: "patrol-code", onsubmit: send }, code, JB.el("button", { class: "primary", type: "submit" }, "签到")),
    state);
}

loadMyPatrols();
setInterval(loadMyPatrols, MP_POLL_MS);
