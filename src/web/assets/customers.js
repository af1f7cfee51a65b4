// Silent customers: the call-back list (GET /api/customers/silent), its CSV export, and
// recording a call-back. No framework, no CDN.
"use strict";

const TEXT = {
  en: {
    outcomes: { resigned: "gave up", negative: "negative", open_incident: "open incident", ok: "ok" },
    markCalled: "Mark called",
    nameFirst: "Enter your name in “Your name” first: it is recorded with the call-back.",
  },
  zh: {
    outcomes: { resigned: "客户放弃", negative: "负面", open_incident: "告警未结", ok: "正常" },
    markCalled: "标记已回访",
    nameFirst: "请先在“您的姓名”中填写姓名：回访记录会保存它。",
    html: {
      pageTitle: "沉默客户 · emotion", skip: "跳到名单", title: "沉默客户", alerts: "告警", signOut: "退出", signIn: "登录",
      tokenLabel: "访问令牌（班长或管理员角色）",
      hint: "上一次联系以负面、未结告警或放弃（“算了，不折腾了”）结束、此后再没有联系的客户，最严重的在前。" +
        "请回访，然后标记为已回访：在下一次联系之前他们不再出现在名单中。客户编号是化名；最后一次会话的 ID 来自您的平台，可据此找到客户。",
      tenant: "租户", all: "全部", asOf: "截至（距今天数）", show: "显示", csv: "下载 CSV", silentList: "沉默名单",
      empty: "名单为空。", customer: "客户", rank: "排序分", bad: "负面 / 联系次数", lastContact: "最后一次联系",
      ended: "结束时间", lowest: "最低分", emotions: "情绪", yourName: "您的姓名", yourNameHint: "回访时记录",
    },
  },
};
const T = TEXT[LANG];

function query() {
  const q = new URLSearchParams({ limit: "200" });
  const tenant = $("tenant").value.trim();
  const days = $("in-days").value.trim();
  if (tenant) q.set("tenant", tenant);
  if (days && days !== "0") q.set("in_days", days);
  return q;
}

let shown = null;
// With auth off the server cannot tell who called: the page asks (and remembers it, like the
// alerts page does for acknowledgements). With auth on, the signed-in token's name is recorded.
let authEnabled = true;

async function whoCalls() {
  if (authEnabled) return "";
  const name = $("called-by").value.trim();
  if (!name) {
    $("called-by").focus();
    throw new Error(T.nameFirst);
  }
  localStorage.setItem("emotion.name", name);
  return name;
}

async function load() {
  const q = query();
  let page;
  try {
    page = await api("/api/customers/silent?" + q);
  } catch (e) {
    return shown(e);
  }
  shown(null);
  q.set("format", "csv");
  $("csv").href = "/api/customers/silent?" + q;
  render(page);
}

function render(page) {
  const rows = $("silent-rows");
  rows.replaceChildren();
  for (const s of page.customers) {
    const last = s.last || {};
    const button = el("button", { type: "button", class: "called", text: T.markCalled });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const calledBy = await whoCalls();
        await api(`/api/customers/${encodeURIComponent(s.customer_key)}/called`,
          { method: "POST", body: JSON.stringify({ called_by: calledBy }) });
        await load();
      } catch (e) {
        button.disabled = false;
        $("customers-error").textContent = e.message;
      }
    });
    rows.append(el("tr", { dataset: { customer: s.customer_key, outcome: last.outcome } },
      el("td", {}, el("code", { text: s.customer_key })),
      el("td", { text: s.tenant }),
      el("td", { text: s.rank.toFixed(2) }),
      el("td", { text: `${s.bad_contacts} / ${s.contacts}` }),
      el("td", {}, el("span", { class: `outcome outcome-${last.outcome}`, text: T.outcomes[last.outcome] || last.outcome }),
        " · ", el("span", { class: "conversation", text: last.conversation_id }), last.queue ? ` (${last.queue})` : ""),
      el("td", { text: last.ended_at_ms ? new Date(last.ended_at_ms).toLocaleString(LANG === "zh" ? "zh-CN" : undefined) : "" }),
      el("td", { text: fmt(last.lowest_score || 0) }),
      el("td", { text: (last.emotions || []).map(emotionName).join(" · ") }),
      el("td", {}, button)));
  }
  $("silent-table").hidden = page.customers.length === 0;
  $("silent-empty").hidden = page.customers.length > 0;
  $("silent-count").textContent = page.total ? `(${page.total})` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  translatePage(TEXT.zh.html);
  shown = signedInPage("customers", "customers-error", load);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  api("/api/status").then((s) => {
    authEnabled = s.identity.auth_enabled;
    if (!authEnabled) {
      $("who").textContent = CT.authOff;
      $("called-by").value = localStorage.getItem("emotion.name") || "";
    }
    $("called-by-label").hidden = authEnabled;
  }).catch(() => {}); // signed out (auth on): the sign-in form says so
  load();
});
