"use strict";
// Log in, then go where the user was going, or to the page of their role.
const HOME = { operator: "/console", admin: "/console", guard: "/guard", officer: "/guard", auditor: "/auditor" };

document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target), error = document.getElementById("error");
  error.textContent = "";
  const res = await fetch("/api/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
    body: JSON.stringify({ name: form.get("name"), password: form.get("password") }),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    error.textContent = res.status === 429 ? `尝试次数过多，请 ${res.headers.get("Retry-After")} 秒后再试`
      : res.status === 401 ? "用户名或密码错误" : `登录失败：${data.detail || res.status}`;
    return;
  }
  const next = new URLSearchParams(location.search).get("next");
  location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : HOME[data.user.role] || "/console";
});
