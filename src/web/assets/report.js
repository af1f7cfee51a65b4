// QA report: GET /api/report with the week-on-week change, and its CSV. No framework, no CDN.
"use strict";

const TEXT = {
  en: {
    metric: (m) => m,
    frustrated: (f) => `${f.conversation_id} · queue ${f.queue} · ${f.language} · customer ${fmt(f.customer_rolling_valence)}`,
    heard: (phrases) => ` · heard ${phrases.join(", ")}`,
  },
  zh: {
    // The report's metrics as the API names them; the alert and agent rows are built below.
    metrics: {
      "contacts": "联系次数", "share ended negative": "以负面结束的比例",
      "share ended with an open incident": "以未结告警结束的比例", "share ended resigned": "以客户放弃结束的比例",
      "repeat contacts": "重复来电", "bot hand-offs": "机器人转人工", "frustrated hand-offs": "带着不满转人工",
      "mood alerts recovered": "情绪告警后恢复", "mood alerts not recovered": "情绪告警后未恢复",
      "median minutes to recover": "恢复所需分钟数（中位数）",
    },
    metric: (m) => {
      const known = TEXT.zh.metrics[m];
      if (known) return known;
      const alert = /^alerts (\S+) (\S+)$/.exec(m);
      if (alert) return `告警：${kindName(alert[1])}（${severityName(alert[2])}）`;
      const strained = /^strained conversations of (.+)$/.exec(m);
      if (strained) return `坐席 ${strained[1]} 的高压会话`;
      return m;
    },
    frustrated: (f) => `${f.conversation_id} · 队列 ${f.queue} · ${f.language} · 客户情绪分 ${fmt(f.customer_rolling_valence)}`,
    heard: (phrases) => ` · 听到：${phrases.join("、")}`,
    html: {
      pageTitle: "质检报告 · emotion", skip: "跳到报告", title: "质检报告", alerts: "告警", silentCustomers: "沉默客户",
      signOut: "退出", signIn: "登录", tokenLabel: "访问令牌（班长或管理员角色）", tenant: "租户", queue: "队列",
      agent: "坐席", all: "全部", days: "天数", show: "显示", csv: "下载 CSV", noContacts: "客户记忆未开启：不记录联系。",
      metric: "指标", thisPeriod: "本期", previous: "上期", change: "变化", frustrated: "带着不满的机器人转人工",
      none: "本期没有。",
    },
  },
};
const T = TEXT[LANG];

function query() {
  const q = new URLSearchParams({ days: $("days").value.trim() || "7" });
  for (const [id, key] of [["tenant", "tenant"], ["queue", "queue"], ["agent", "agent_id"]]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

let shown = null;

async function load() {
  const q = query();
  let r;
  try {
    r = await api("/api/report?" + q);
  } catch (e) {
    return shown(e);
  }
  shown(null);
  q.set("format", "csv");
  $("csv").href = "/api/report?" + q;
  $("no-contacts").hidden = r.contacts_recorded;
  $("metric-rows").replaceChildren(...r.metrics.map((m) =>
    el("tr", { dataset: { metric: m.metric } },
      el("th", { scope: "row", text: T.metric(m.metric) }),
      el("td", { text: m.current }), el("td", { text: m.previous }), el("td", { text: m.change }))));
  $("frustrated").replaceChildren(...r.frustrated.map((f) =>
    el("li", { dataset: { conversation: f.conversation_id } },
      T.frustrated(f),
      f.escalation_phrases.length ? T.heard(f.escalation_phrases) : "")));
  $("frustrated-empty").hidden = r.frustrated.length > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  translatePage(TEXT.zh.html);
  shown = signedInPage("report", "report-error", load);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
});
