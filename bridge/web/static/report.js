// The monthly report's charts (bridge/web/report.py): drawn at once from the figures in #report-data, before the
// page's load event, so that Chromium's --print-to-pdf prints them. Fixed sizes and twice the pixels: sharp on paper.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const colours = ["#1f6fd1", "#d9363e", "#e89a00", "#2f9e5b", "#7c4dcc", "#1aa3a3", "#d1478f", "#a68b00", "#5b8c00",
    "#d4622b", "#4a7fd6", "#9a6fd6", "#3fb3b3", "#b38f00", "#6a7fd6", "#d96b6b"];
  Object.assign(Chart.defaults, { animation: false, responsive: false, devicePixelRatio: 2, color: "#222" });
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 11;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;
  const counts = { beginAtZero: true, ticks: { precision: 0 } };

  new Chart(document.getElementById("chart-trend"), {
    type: "bar",
    data: { labels: data.periods.map((p) => `${p.slice(5)} 起`),
      datasets: data.trend.map((t, i) => ({ label: t.name, data: t.counts, backgroundColor: colours[i % colours.length] })) },
    options: { plugins: { legend: { position: "right" } }, scales: { x: { stacked: true }, y: { ...counts, stacked: true } } },
  });
  new Chart(document.getElementById("chart-types"), {
    type: "doughnut",
    data: { labels: data.types.map((t) => t.name),
      datasets: [{ data: data.types.map((t) => t.count), backgroundColor: data.types.map((_, i) => colours[i % colours.length]) }] },
    options: { plugins: { legend: { position: "right" } } },
  });
  new Chart(document.getElementById("chart-response"), {
    type: "bar",
    data: { labels: data.response.labels, datasets: [{ data: data.response.counts, backgroundColor: "#e89a00" }] },
    options: { plugins: { legend: { display: false } }, scales: { y: counts } },
  });
})();
