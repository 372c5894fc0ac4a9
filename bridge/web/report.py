"""The monthly report (月报) as printable HTML, and as a PDF printed from it by Debian's Chromium.

Why Chromium and not an in-process renderer: it is already installed (scripts/setup.sh installs it for the browser
tests and the pages are made for it), it lays out Chinese text with the fonts the pages use and follows the same
print CSS a user gets from the browser's own 打印, and it adds no Python dependency. WeasyPrint would render
in-process but is one more package with its own CSS support to keep in step. The cost is a process per report
(~1 s, a few hundred MB while it runs), acceptable for a report printed a few times a month.

Every value from the database (place names, notes, unit names) is escaped into the HTML (and into the charts' JSON,
which cannot close its script element), and the report's own Content-Security-Policy lets no script but its own
files run in it, whether a browser shows it or Chromium prints it (the charts are drawn before the page's load event,
so Chromium prints them).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from datetime import datetime
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

from dispatch.statistics import INTERVALS

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = ("report.css", "report.js", "vendor/chartjs/chart.umd.min.js")  # what the report loads, relative to static/
PDF_TIMEOUT_S = 60.0
# the report loads its own stylesheet and scripts and nothing else, and sends nothing anywhere, in the browser and
# when Chromium prints it
REPORT_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"

# the same names the pages show (static/common.js, JB.LABELS): the report is rendered here, without the pages' script
TYPE_NAMES = {"weapon": "持械", "robbery": "抢劫", "fire": "火情", "domestic": "家庭纠纷", "fight": "打架斗殴",
              "medical": "急救", "missing": "人员走失", "theft": "盗窃", "fraud": "诈骗", "gathering": "聚集",
              "suspicious": "可疑情况", "traffic": "交通", "dispute": "纠纷", "noise": "噪音扰民", "other": "其他",
              "sos": "SOS紧急求助"}  # fmt: skip
ROLE_NAMES = {"guard": "保安", "officer": "民警", "chief": "社区警长", "volunteer": "义警", "grid_worker": "网格员"}
STAGE_NAMES = {"reported": "发现", "alerted": "派警", "acked": "响应", "on_scene": "到场", "resolved": "处置完毕"}


class PdfError(RuntimeError):
    """Chromium is missing, failed or took too long."""


def type_name(t: str) -> str:
    return TYPE_NAMES.get(t, t)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} 秒"
    if seconds < 3600:
        return f"{seconds / 60:.1f} 分"
    return f"{seconds / 3600:.1f} 小时"


def render_html(summary: dict[str, Any], *, title: str, station: str, static: str) -> str:
    """The report: totals, three charts (drawn by static/report.js with Chart.js from the figures in a JSON data
    block), incidents by type / grid / station / place, response times, channels, participation. `static`: where
    ASSETS are, "/static/" when served, "" beside the file Chromium prints."""
    t = summary["totals"]
    sections = [
        _table("一、概况", ["警情总数", "已处置", "误报", "未结", "有到场记录"],
               [[t["incidents"], t["resolved"], t["false_alarms"], t["open"], t["on_scene_reached"]]]),
        CHARTS,
        _table("二、按类型", ["类型", "起数"], [[type_name(r["id"]), r["count"]] for r in summary["by_type"]]),
        _table("三、按网格", ["网格（社区）", "起数"], [[r["name"], r["count"]] for r in summary["by_grid"]]),
        _table("四、按派出所/警务点", ["单位", "起数"], [[r["name"], r["count"]] for r in summary["by_station"]]),
        _table("五、高发地点（前十）", ["地点", "起数"], [[r["name"], r["count"]] for r in summary["by_place"][:10]]),
        _table("六、响应时间", ["环节", "样本数", "中位数 P50", "P90", "平均"],
               [[f"{STAGE_NAMES[a]} → {STAGE_NAMES[b]}", d["n"], duration(d["p50"]), duration(d["p90"]), duration(d["mean"])]
                for a, b in INTERVALS for d in [summary["response"][f"{a}-{b}"]]]),
        _table("七、频道", ["频道", "通话次数", "报警起数"],
               [[c["name"], c["utterances"], c["incidents"]] for c in summary["channels"]]),
        _table("八、警保联动考核（按单位）",
               ["人员/队伍", "单位", "角色", "派警", "响应", "到场", "拒绝", "未应答", "响应用时 P50"],
               [[u["name"], u["unit"], ROLE_NAMES.get(u["role"], u["role"]), u["alerted"], u["answered"], u["on_scene"],
                 u["declined"], u["unanswered"], duration(u["answer_p50_s"])] for u in summary["units"]]),
    ]  # fmt: skip
    since, until = (datetime.fromtimestamp(x).strftime("%Y-%m-%d %H:%M") for x in (summary["since"], summary["until"]))
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    css, *scripts = (escape(static + asset) for asset in ASSETS)
    return (
        '<!doctype html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="{css}"></head><body class="report">'
        f"<h1>{escape(station)} {escape(title)}</h1>"
        f'<p class="meta">统计期间：{since} 至 {until}（不含）　生成时间：{made}　数据来源：警保联动系统</p>'
        + "".join(sections)
        + '<p class="meta">说明：警情不含调度员忽略的待确认通话与已撤销的初报；响应时间取每个环节首次发生的时刻。</p>'
        f'<script type="application/json" id="report-data">{_chart_data(summary)}</script>'
        + "".join(f'<script src="{src}"></script>' for src in reversed(scripts))  # Chart.js first
        + "</body></html>\n"
    )


CHARTS = (
    '<section class="charts"><h2>图表</h2>'
    '<figure class="wide"><figcaption>警情趋势（按周、按类型）</figcaption><canvas id="chart-trend" width="700" height="230">'
    "</canvas></figure>"
    '<figure><figcaption>警情类型</figcaption><canvas id="chart-types" width="340" height="230"></canvas></figure>'
    '<figure><figcaption>发现 → 到场用时分布</figcaption><canvas id="chart-response" width="340" height="230"></canvas>'
    "</figure></section>"
)


def _chart_data(summary: dict[str, Any]) -> str:
    """The charts' figures as JSON that cannot end the script element it sits in."""
    response = summary["response"]["reported-on_scene"]
    data = {
        "periods": summary["by_period"]["periods"],
        "trend": [{"name": type_name(t), "counts": c} for t, c in summary["by_period"]["types"].items()],
        "types": [{"name": type_name(r["id"]), "count": r["count"]} for r in summary["by_type"]],
        "response": {"labels": _bins(response["histogram"]["edges_s"]), "counts": response["histogram"]["counts"]},
    }
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def _bins(edges: list[float]) -> list[str]:
    return [f"{duration(a)}–{duration(b)}" for a, b in pairwise(edges)] + [f"≥{duration(edges[-1])}"]


def _table(heading: str, columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}">无</td></tr>'
    return f"<section><h2>{escape(heading)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def html_to_pdf(html: str) -> bytes:
    """Print the report's HTML (rendered with static="": its ASSETS are copied beside it) to PDF with headless
    Chromium."""
    exe = chromium()
    if exe is None:
        raise PdfError("chromium is not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="jingbao-report-") as tmp:
        folder = Path(tmp)
        for asset in ASSETS:
            (folder / asset).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(STATIC / asset, folder / asset)
        (folder / "report.html").write_text(html, encoding="utf-8")
        out = folder / "report.pdf"
        args = [exe, "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={folder / 'profile'}", "--no-pdf-header-footer", f"--print-to-pdf={out}",
                (folder / "report.html").as_uri()]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.PIPE)  # fmt: skip
        try:
            _, err = await asyncio.wait_for(process.communicate(), PDF_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PdfError(f"chromium took over {PDF_TIMEOUT_S:.0f} s to print the report") from None
        if process.returncode != 0 or not out.exists():
            raise PdfError(f"chromium failed ({process.returncode}): {err.decode(errors='replace')[-300:]}")
        return out.read_bytes()
