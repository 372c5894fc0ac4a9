// The auditor page: search transcripts (2-character terms, pinyin, ASR errors), replay, export; the audit log and
// the archive's verification. Every search, playback and export is logged by the server.
"use strict";

const A = { offset: 0, params: null, names: {} };

async function main() {
  // wired before anything is awaited: a search typed while the page still loads must not submit the form natively
  // (which reloads the page and loses it)
  document.getElementById("search").addEventListener("submit", (e) => { e.preventDefault(); search(0); });
  document.getElementById("more").addEventListener("click", () => search(A.offset));
  await JB.session(["auditor"]);
  const { bureaus } = await JB.api("/api/stations");
  if (bureaus.length) stationFilter(bureaus);
  const channels = bureaus.length ? [] : await JB.api("/api/channels"); // central: its channels are the stations
  for (const c of channels) A.names[c.id] = c.name;
  document.getElementById("f-channel").append(...channels.map((c) => JB.el("option", { value: c.id }, c.name)));
  document.getElementById("f-type").append(...Object.entries(JB.LABELS.type).map(([k, v]) => JB.el("option", { value: k }, v)));
  document.getElementById("verify-now").addEventListener("click", async () => showVerify(await JB.api("/api/archive/verify", { method: "POST" })));
  loadAudit();
  JB.api("/api/archive/verify").then(showVerify).catch((e) => { document.getElementById("archive-verify").textContent = e.message; });
}

// At the central tier: every station the user may search, under its 分局 (a whole 分局 is a choice too); a box has none.
function stationFilter(bureaus) {
  document.getElementById("station-filter").hidden = false;
  document.getElementById("stats-link").hidden = true; // statistics are each station's, on its own box
  document.getElementById("f-station").append(...bureaus.map((b) => JB.el("optgroup", { label: b.name },
    b.id ? JB.el("option", { value: b.id }, `${b.name}（全部）`) : null,
    ...b.stations.map((s) => JB.el("option", { value: s.id }, s.name)))));
}

function searchParams() {
  const form = new FormData(document.getElementById("search")), params = new URLSearchParams();
  for (const [k, v] of form) {
    if (!v) continue;
    params.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v);
  }
  return params;
}

async function search(offset) {
  const params = searchParams();
  document.getElementById("export").href = `/api/search/export.csv?${params}`;
  params.set("offset", offset);
  params.set("limit", 50);
  const body = document.getElementById("results"), summary = document.getElementById("summary");
  let page;
  try { page = await JB.api(`/api/search?${params}`); }
  catch (e) { summary.textContent = `检索失败：${e.message}`; return; }
  if (offset === 0) body.replaceChildren();
  A.offset = offset + page.results.length;
  summary.textContent = A.offset ? `共显示 ${A.offset} 条${page.more ? "，还有更多" : ""}` : "没有找到";
  document.getElementById("more").hidden = !page.more;
  for (const r of page.results) {
    const snippet = JB.el("span");
    snippet.innerHTML = r.snippet; // server-side HTML: the transcript escaped, matches in <mark>
    if (r.snippet_field === "pinyin") { snippet.className = "py"; toneMarks(snippet); }
    // characters decoded from the on-board engine's pinyin: the syllables heard under them
    const heard = r.snippet_field === "readable" ? JB.el("div", { class: "py heard" }, JB.pinyinText(r.pinyin)) : null;
    body.append(JB.el("tr", { "data-utterance": r.utterance_id },
      JB.el("td", {}, new Date(r.start_iso).toLocaleString("zh-CN", { hour12: false })),
      JB.el("td", {}, r.station_name ? JB.el("div", { class: "muted" }, r.station_name) : null,
        A.names[r.channel] || (r.station ? r.channel.slice(r.station.length + 1) : r.channel)),
      JB.el("td", { class: "text" }, snippet, r.match === "sounds_like" ? JB.el("span", { class: "sounds-like" }, "（读音相近）") : null, heard,
        !r.text && r.keywords.length ? JB.el("div", { class: "muted" }, "关键词：", r.keywords.map((k) => JB.el("b", { class: "kw" }, ` ${k.label || k}`))) : null),
      JB.el("td", {}, r.incidents.map((i) => JB.el("div", {}, `${JB.label("type", i.type)} ${i.place_name || ""}`))),
      JB.el("td", {}, JB.audioButton(r.utterance_id))));
  }
  loadAudit();
}

// Tone-numbered pinyin in the text of `node` (and of its <mark>s) written with tone marks, as people read it.
function toneMarks(node) {
  const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    text.nodeValue = text.nodeValue.replace(/[a-zü:]+[1-5]/gi, JB.toneMark);
  }
}

function showVerify(report) {
  const box = document.getElementById("archive-verify");
  const r = report.report || report;
  // at central one report per station (its copy of each station's chain): counted and listed together, by station
  const parts = r.stations ? Object.entries(r.stations) : [["", r]];
  const problems = parts.flatMap(([station, part]) => (part.problems || []).map((p) => ({ ...p, station })));
  const rows = parts.reduce((n, [, part]) => n + (part.checked ?? part.rows ?? 0), 0);
  const ok = r.ok ?? problems.length === 0;
  box.className = `verify ${ok ? "ok" : "bad"}`;
  const when = report.checked_at || report.at;
  const stations = r.stations ? ` · ${parts.length} 个派出所` : "";
  box.replaceChildren(ok ? "✔ 档案完整，未发现篡改" : `✘ 发现 ${problems.length} 处问题`,
    JB.el("div", { class: "muted" }, `${rows} 条录音${stations}${when ? ` · 校验于 ${typeof when === "number" ? JB.dateTime(when) : when}` : ""}`),
    JB.el("ul", {}, problems.slice(0, 10).map((p) =>
      JB.el("li", {}, `${p.station ? `${p.station} ` : ""}${p.id || p.utterance_id || p.seq || ""} ${p.kind || ""} ${p.detail || ""}`))));
}

async function loadAudit() {
  const ACTIONS = { search: "检索", export: "导出", playback: "回放", login: "登录", login_failed: "登录失败", logout: "退出",
                    task: "发送任务", task_cancel: "撤销任务", task_remind: "提醒签收", task_step: "纠纷处置进展", task_file: "查看反馈附件" };
  const [entries, chain] = await Promise.all([JB.api("/api/audit?limit=50"), JB.api("/api/audit/verify")]);
  document.getElementById("audit-verify").textContent = chain.ok ? `（${chain.rows} 条，链完整）` : "（链已损坏！）";
  document.getElementById("audit").replaceChildren(...entries.map((e) => JB.el("tr", {},
    JB.el("td", {}, JB.dateTime(e.ts_ms / 1000)), JB.el("td", {}, e.user_name), JB.el("td", {}, ACTIONS[e.action] || e.action),
    JB.el("td", {}, e.target))));
}

main().catch((e) => { if (e.message !== "role refused") console.error(e); });
