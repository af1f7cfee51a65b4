// Supervisor dashboard: live alerts over Server-Sent Events (resuming by the alert log's
// sequence), conversations at risk and the heatmap by polling the JSON API. No framework, no CDN.
"use strict";

const POLL_CONVERSATIONS_MS = 2000;
const POLL_HEATMAP_MS = 10000;
const POLL_STATUS_MS = 5000;
const MAX_INCIDENTS = 300;

const state = {
  identity: null,
  filters: JSON.parse(localStorage.getItem("emotion.filters") || "{}"),
  incidents: new Map(), // alert_id -> {events: Map(sequence -> event), receivedAt}
  seen: new Set(), // sequences already applied
  lastSequence: 0,
  source: null,
  timers: [],
  generation: 0, // bumped on every restart, so stale responses are ignored
};

// The page's words: `html` for the fixed ones (index.html's data-i18n keys, Chinese only),
// the rest for what this script writes.
const TEXT = {
  en: {
    feed: { signedOut: "feed: signed out", connecting: "feed: connecting", live: "feed: live", offline: "feed: offline", reconnecting: "feed: reconnecting…" },
    model: "model", shadow: "shadow", unreachable: "▲ service unreachable",
    healthTitle: (s) => `Model sha256 ${s.model.sha256.slice(0, 12)}…, ${s.model.labels} labels, ` +
      `${s.conversations_tracked} conversations tracked, redaction ${s.redaction}`,
    incidents: (n, open) => `${n} incident${n === 1 ? "" : "s"}, ${open} open and unacknowledged`,
    ackedBy: (who, at, note) => `Acknowledged by ${who} at ${at}${note ? `: “${note}”` : ""}`,
    resolvedNotAcked: "Resolved, not acknowledged", openNotAcked: "Open, not acknowledged",
    alertLabel: (a) => `${a.severity} ${kindName(a.kind)} alert on ${a.conversation_id}`,
    noQueue: "no queue", agent: "agent", rolling: (a) => `rolling ${fmt(a.rolling_valence)} (trend ${fmt(a.trend_start)} → ${fmt(a.trend_now)})`,
    dominant: "Dominant: ", suggested: "Suggested: ", noteFor: (id) => `Note for the alert on ${id}`,
    notePlaceholder: "note (optional)", acknowledge: "Acknowledge",
    nameFirst: "Enter your name in “Your name” first: it is recorded.",
    acknowledged: (who) => `Acknowledged by ${who}`,
    announce: (a) => `${a.severity} alert: ${kindName(a.kind)} on ${a.conversation_id}` + (a.queue ? ` in ${a.queue}` : ""),
    spark: (n, from, to) => `Rolling score over ${n} customer turns, from ${from} to ${to}`, noCustomerTurns: "No customer turns yet",
    ofMatched: (n, m) => `${n} of ${m}`, conversation: (id) => `Conversation ${id}`, loading: "Loading…",
    speaker: { customer: "customer", agent: "agent", bot: "bot" },
    speakerLine: (s) => `${TEXT.en.speaker[s.speaker] || s.speaker} ${fmt(s.rolling_valence)} over ${s.turns} turns`,
    alertLevel: "alert", textPolicy: "text",
    columns: ["Turn", "Speaker", "Text", "Valence", "Speaker's rolling", "Top emotions", "Alert"], notKept: "(not kept)",
    noHeat: "No customer turns in this window.", heatLabel: "Mean customer valence per queue and 5 minutes",
    queueColumn: "Queue", noQueueRow: "(no queue)",
    cell: (span, c) => `${span}: mean valence ${fmt(c.mean_valence)} over ${c.turns} customer turns; dominant ${c.dominant} (${c.dominant_turns})` +
      (c.dominant_emotion && c.dominant_emotion !== c.dominant ? `, strongest emotion ${c.dominant_emotion} (${c.dominant_emotion_turns})` : ""),
    emptyCell: (span) => `${span}: no customer turns`,
  },
  zh: {
    html: {
      pageTitle: "班长看板 · emotion", skip: "跳到告警", title: "班长看板", healthTitle: "服务状态和正在打分的模型",
      healthChecking: "状态：检查中…", feedTitle: "实时告警推送", feedOffline: "推送：离线", silentCustomers: "沉默客户",
      qaReport: "质检报告", signOut: "退出", signIn: "登录", tokenLabel: "访问令牌（班长或管理员角色）",
      tokenHint: "管理员用以下命令创建令牌：", filters: "筛选", tenant: "租户", queue: "队列", severity: "级别", all: "全部",
      warningUp: "警告及以上", criticalUp: "严重及以上", urgentOnly: "仅紧急", yourName: "您的姓名",
      yourNameHint: "确认告警时记录", apply: "应用", liveAlerts: "实时告警", noAlerts: "当前筛选条件下没有告警。",
      atRisk: "风险会话", atRiskCaption: "进行中的会话，客户滚动情绪分最低的在前", conversation: "会话", rolling: "滚动分",
      trajectory: "走势", dominantEmotions: "主要情绪", alert: "告警", noConversations: "没有进行中的会话。",
      heatmap: "情绪热力图", heatmapHint: "每个队列每 5 分钟的客户平均情绪值。", last: "最近",
      h1: "1 小时", h2: "2 小时", h4: "4 小时", h8: "8 小时", h12: "12 小时", heatDetail: "将鼠标移到或聚焦某个格子查看详情。",
      legendNegative: "负面 −1", legendPositive: "+1 正面", close: "关闭",
    },
    feed: { signedOut: "推送：已退出", connecting: "推送：连接中", live: "推送：实时", offline: "推送：离线", reconnecting: "推送：重新连接中…" },
    model: "模型", shadow: "影子", unreachable: "▲ 服务无法访问", health: { SERVING: "运行中", NOT_SERVING: "未就绪" },
    healthTitle: (s) => `模型 sha256 ${s.model.sha256.slice(0, 12)}…，${s.model.labels} 个标签，` +
      `跟踪中的会话 ${s.conversations_tracked} 个，文本处理：${s.redaction}`,
    incidents: (n, open) => `共 ${n} 条，${open} 条未解除且未确认`,
    ackedBy: (who, at, note) => `${who} 于 ${at} 确认${note ? `：“${note}”` : ""}`,
    resolvedNotAcked: "已解除，未确认", openNotAcked: "未解除，未确认",
    alertLabel: (a) => `会话 ${a.conversation_id} 的${severityName(a.severity)}告警：${kindName(a.kind)}`,
    noQueue: "无队列", agent: "坐席", rolling: (a) => `滚动分 ${fmt(a.rolling_valence)}（走势 ${fmt(a.trend_start)} → ${fmt(a.trend_now)}）`,
    dominant: "主要情绪：", suggested: "建议：", noteFor: (id) => `会话 ${id} 告警的备注`,
    notePlaceholder: "备注（可选）", acknowledge: "确认",
    nameFirst: "请先在“您的姓名”中填写姓名：确认时会记录。",
    acknowledged: (who) => `${who} 已确认`,
    announce: (a) => `${severityName(a.severity)}告警：会话 ${a.conversation_id}，${kindName(a.kind)}` + (a.queue ? `，队列 ${a.queue}` : ""),
    spark: (n, from, to) => `客户 ${n} 轮发言的滚动情绪分，从 ${from} 到 ${to}`, noCustomerTurns: "客户尚未发言",
    ofMatched: (n, m) => `${n} / ${m}`, conversation: (id) => `会话 ${id}`, loading: "加载中…",
    speaker: { customer: "客户", agent: "坐席", bot: "机器人" },
    speakerLine: (s) => `${TEXT.zh.speaker[s.speaker] || s.speaker} ${fmt(s.rolling_valence)}（${s.turns} 轮）`,
    alertLevel: "告警", textPolicy: "文本", redaction: { none: "原文", masked: "已脱敏", no_text: "不保留" },
    columns: ["轮次", "说话人", "内容", "情绪值", "说话人滚动分", "主要情绪", "告警"], notKept: "（未保留）",
    noHeat: "此时段没有客户发言。", heatLabel: "每个队列每 5 分钟的客户平均情绪值",
    queueColumn: "队列", noQueueRow: "（无队列）",
    cell: (span, c) => `${span}：平均情绪值 ${fmt(c.mean_valence)}，客户发言 ${c.turns} 轮；最多 ${emotionName(c.dominant)}（${c.dominant_turns}）` +
      (c.dominant_emotion && c.dominant_emotion !== c.dominant ? `，最强情绪 ${emotionName(c.dominant_emotion)}（${c.dominant_emotion_turns}）` : ""),
    emptyCell: (span) => `${span}：没有客户发言`,
  },
};
const T = TEXT[LANG];

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const hm = (secs) => new Date(secs * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const words = (s) => (s || "").replaceAll("_", " ");

function query(extra = {}) {
  const f = state.filters;
  const q = new URLSearchParams();
  if (f.tenant) q.set("tenant", f.tenant);
  if (f.queue) q.set("queue", f.queue);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== "") q.set(k, v);
  return q;
}

// ---- sign-in and status -------------------------------------------------------------------

function showSignIn(message) {
  stop();
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("who").textContent = "";
  document.body.dataset.feed = "offline";
  $("feed-state").textContent = T.feed.signedOut;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  try {
    await api("/api/session", { method: "POST", body: JSON.stringify({ token }) });
    $("token").value = "";
    await boot();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? CT.unknownToken : e.message;
  }
}

async function signOut() {
  await api("/api/session", { method: "DELETE" }).catch(() => {});
  showSignIn(CT.signedOut);
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    const h = $("health");
    h.dataset.health = s.health;
    h.textContent = `${s.health === "SERVING" ? "●" : "▲"} ${(T.health && T.health[s.health]) || s.health} · ${T.model} ${s.model.version}` +
      (s.model.shadow ? ` (${T.shadow} ${s.model.shadow})` : "") +
      (s.model.languages || []).map((l) => ` · ${l.language} ${l.version}`).join("");
    h.title = T.healthTitle(s);
    return s;
  } catch (e) {
    if (e.status !== 401) {
      $("health").dataset.health = "unreachable";
      $("health").textContent = T.unreachable;
    }
    return null;
  }
}

async function boot() {
  const s = await refreshStatus();
  if (!s) {
    if (!$("signin").hidden) return;
    setTimeout(boot, 3000);
    return;
  }
  state.identity = s.identity;
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = !s.identity.auth_enabled;
  $("who").textContent = s.identity.auth_enabled
    ? `${s.identity.name} (${s.identity.role}${s.identity.tenants.length ? ": " + s.identity.tenants.join(", ") : ""})`
    : CT.authOff;
  $("f-name-label").hidden = s.identity.auth_enabled;
  $("f-tenant").value = state.filters.tenant || "";
  $("f-queue").value = state.filters.queue || "";
  $("f-severity").value = state.filters.min_severity || "";
  $("f-hours").value = state.filters.hours || "2";
  $("f-name").value = localStorage.getItem("emotion.name") || "";
  await start();
}

// ---- alerts ---------------------------------------------------------------------------------

function stop() {
  state.generation++;
  if (state.source) state.source.close();
  state.source = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
}

async function start() {
  stop();
  const generation = state.generation;
  state.incidents.clear();
  state.seen.clear();
  $("alert-list").replaceChildren();
  document.body.dataset.feed = "connecting";
  $("feed-state").textContent = T.feed.connecting;
  try {
    const history = await api("/api/alerts?" + query({ min_severity: state.filters.min_severity, limit: 300 }));
    if (generation !== state.generation) return;
    history.alerts.reverse().forEach((a) => apply(a, false));
    state.lastSequence = history.last_sequence;
    renderAlerts();
    connect(generation);
  } catch (e) {
    if (e.status !== 401) setTimeout(() => generation === state.generation && start(), 3000);
    return;
  }
  const poll = (fn, ms) => { fn(); state.timers.push(setInterval(fn, ms)); };
  poll(() => refreshConversations(generation), POLL_CONVERSATIONS_MS);
  poll(() => refreshHeatmap(generation), POLL_HEATMAP_MS);
  state.timers.push(setInterval(refreshStatus, POLL_STATUS_MS));
}

function connect(generation) {
  const params = query({ min_severity: state.filters.min_severity, after: state.lastSequence });
  const source = new EventSource("/api/alerts/stream?" + params);
  state.source = source;
  source.addEventListener("open", () => {
    document.body.dataset.feed = "live";
    $("feed-state").textContent = T.feed.live;
  });
  source.addEventListener("alert", (e) => {
    const alert = JSON.parse(e.data);
    if (apply(alert, true)) renderAlerts();
  });
  source.addEventListener("reset", () => {
    // The sequence we would resume after is gone (new log, or retention): reload everything.
    source.close();
    if (generation === state.generation) start();
  });
  source.addEventListener("error", () => {
    if (generation !== state.generation) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (signed out, or the server is gone for good): check why, then start again.
      document.body.dataset.feed = "offline";
      $("feed-state").textContent = T.feed.offline;
      setTimeout(() => generation === state.generation && boot(), 3000);
    } else {
      document.body.dataset.feed = "reconnecting";
      $("feed-state").textContent = T.feed.reconnecting;
    }
  });
}

// Adds one event; true when it was new.
function apply(alert, live) {
  if (state.seen.has(alert.sequence)) return false;
  state.seen.add(alert.sequence);
  state.lastSequence = Math.max(state.lastSequence, alert.sequence);
  let incident = state.incidents.get(alert.alert_id);
  if (!incident) {
    incident = { events: new Map(), receivedAt: Date.now() };
    state.incidents.set(alert.alert_id, incident);
  }
  incident.events.set(alert.sequence, alert);
  if (live && (alert.state === "RAISED" || alert.state === "ESCALATED")) {
    $("announcer").textContent = T.announce(alert);
  }
  return true;
}

function incidentView(id, incident) {
  const events = [...incident.events.values()].sort((a, b) => a.sequence - b.sequence);
  const last = events[events.length - 1];
  // What the card explains: the latest RAISED or ESCALATED event (a RESOLVED one says little).
  const raised = events.filter((e) => e.state === "RAISED" || e.state === "ESCALATED");
  const main = raised[raised.length - 1] || last;
  const ack = events.find((e) => e.state === "ACKNOWLEDGED");
  return { id, events, last, main, ack, receivedAt: incident.receivedAt };
}

function renderAlerts() {
  const views = [...state.incidents.entries()].map(([id, i]) => incidentView(id, i))
    .sort((a, b) => b.last.sequence - a.last.sequence);
  for (const v of views.slice(MAX_INCIDENTS)) state.incidents.delete(v.id);
  const list = $("alert-list");
  const focusedId = document.activeElement?.closest?.(".alert")?.dataset.alertId;
  const focusedClass = document.activeElement?.className;
  const notes = new Map([...list.querySelectorAll(".alert")].map((n) => [n.dataset.alertId, n.querySelector(".ack input")?.value]));
  list.replaceChildren(...views.slice(0, MAX_INCIDENTS).map((v) => alertCard(v, notes.get(v.id))));
  if (focusedId) {
    const card = list.querySelector(`.alert[data-alert-id="${CSS.escape(focusedId)}"]`);
    const target = card && (card.querySelector(`.${(focusedClass || "").split(" ")[0]}`) || card);
    if (target) target.focus();
  }
  const open = views.filter((v) => v.last.state !== "RESOLVED" && !v.ack).length;
  $("alert-count").textContent = T.incidents(views.length, open);
  $("alerts-empty").hidden = views.length > 0;
}

function alertCard(v, note) {
  const a = v.main;
  const excerpt = [...(a.evidence || [])].reverse().find((e) => e.excerpt)?.excerpt;
  const history = v.events.filter((e) => e.state !== "ACKNOWLEDGED")
    .map((e) => `${stateName(e.state)} ${clock(e.created_at_ms)}`).join(" → ");
  const status = v.ack
    ? T.ackedBy(v.ack.acknowledged_by, clock(v.ack.created_at_ms), v.ack.note)
    : v.last.state === "RESOLVED" ? T.resolvedNotAcked : T.openNotAcked;
  const card = el("li", {
    class: "alert",
    tabindex: "-1",
    "aria-label": T.alertLabel(a),
    dataset: {
      alertId: v.id, conversation: a.conversation_id, severity: a.severity, state: v.last.state,
      acknowledged: String(Boolean(v.ack)), sequence: String(v.last.sequence), receivedAt: String(v.receivedAt),
    },
  },
  el("div", { class: "alert-head" },
    el("span", { class: `sev sev-${a.severity}`, text: severityName(a.severity) }),
    el("strong", { text: kindName(a.kind) }),
    el("time", { datetime: new Date(a.created_at_ms).toISOString(), text: clock(a.created_at_ms) })),
  el("p", { class: "where" },
    el("button", { class: "link", type: "button", text: a.conversation_id, onclick: () => openConversation(a.conversation_id) }),
    ` · ${[a.tenant, a.queue].filter(Boolean).join(" / ") || T.noQueue}${a.agent_id ? ` · ${T.agent} ${a.agent_id}` : ""}` +
    ` · ${T.rolling(a)}`),
  a.detail ? el("p", { class: "detail", text: a.detail }) : null,
  excerpt ? el("blockquote", { class: "excerpt", text: excerpt }) : null,
  a.dominant_emotions?.length ? el("p", { class: "emotions", text: T.dominant + emotionList(a.dominant_emotions) }) : null,
  a.suggestion ? el("p", { class: "suggestion", text: T.suggested + a.suggestion }) : null,
  el("p", { class: "status", text: `${status} · ${history}` }),
  v.ack ? null : el("form", { class: "ack", onsubmit: (e) => { e.preventDefault(); acknowledge(v.id, e.target); } },
    el("input", { name: "note", "aria-label": T.noteFor(a.conversation_id), placeholder: T.notePlaceholder, maxlength: "1024", value: note || undefined }),
    el("button", { class: "ack-button", type: "submit", text: T.acknowledge }),
    el("span", { class: "error", role: "alert" })));
  return card;
}

async function acknowledge(alertId, form) {
  const note = form.querySelector("input").value;
  const supervisor = $("f-name").value.trim();
  if (!state.identity.auth_enabled) {
    if (!supervisor) {
      form.querySelector(".error").textContent = T.nameFirst;
      $("f-name").focus();
      return;
    }
    localStorage.setItem("emotion.name", supervisor);
  }
  try {
    const event = await api(`/api/alerts/${encodeURIComponent(alertId)}/ack`, {
      method: "POST", body: JSON.stringify({ note, supervisor }),
    });
    if (apply(event, false)) renderAlerts();
    $("announcer").textContent = T.acknowledged(event.acknowledged_by);
  } catch (e) {
    form.querySelector(".error").textContent = e.message;
  }
}

// ---- conversations ----------------------------------------------------------------------------

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 120, h = 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", values.length
    ? T.spark(values.length, fmt(values[0]), fmt(values[values.length - 1]))
    : T.noCustomerTurns);
  const zero = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: w, y1: h / 2, y2: h / 2 }).forEach(([k, v]) => zero.setAttribute(k, v));
  svg.append(zero);
  if (values.length) {
    const step = values.length > 1 ? (w - 4) / (values.length - 1) : 0;
    const points = values.map((v, i) => `${(2 + i * step).toFixed(1)},${(h / 2 - v * (h / 2 - 2)).toFixed(1)}`);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", values.length > 1 ? points.join(" ") : `${points[0]} ${points[0]}`);
    svg.append(line);
  }
  return svg;
}

async function refreshConversations(generation) {
  try {
    const data = await api("/api/conversations?" + query({ limit: 25 }));
    if (generation !== state.generation) return;
    $("conv-count").textContent = T.ofMatched(data.conversations.length, data.matched);
    $("conv-empty").hidden = data.conversations.length > 0;
    const focused = document.activeElement?.dataset?.open;
    $("conv-rows").replaceChildren(...data.conversations.map((c) => el("tr", { dataset: { conversationId: c.conversation_id } },
      el("td", {}, el("button", { class: "link", type: "button", dataset: { open: c.conversation_id },
        text: c.conversation_id, onclick: () => openConversation(c.conversation_id) })),
      el("td", { text: [c.tenant, c.queue].filter(Boolean).join(" / ") || "—" }),
      el("td", { class: `valence ${c.customer_rolling < 0 ? "neg" : "pos"}`, text: c.customer_rolling === null ? "—" : fmt(c.customer_rolling) }),
      el("td", {}, sparkline(c.trajectory)),
      el("td", { text: emotionList(c.dominant_emotions) }),
      el("td", {}, el("span", { class: `sev sev-${c.alert_level}`, text: severityName(c.alert_level) })))));
    if (focused) document.querySelector(`[data-open="${CSS.escape(focused)}"]`)?.focus();
  } catch (_) { /* status shows reachability */ }
}

async function openConversation(id) {
  const dialog = $("conv-dialog");
  $("conv-title").textContent = T.conversation(id);
  $("conv-body").replaceChildren(el("p", { text: T.loading }));
  if (!dialog.open) dialog.showModal();
  try {
    const c = await api(`/api/conversations/${encodeURIComponent(id)}`);
    const speakers = c.speakers.map(T.speakerLine).join(" · ");
    $("conv-body").replaceChildren(
      el("p", { class: "where", text: `${[c.tenant, c.queue].filter(Boolean).join(" / ") || T.noQueue}` +
        `${c.agent_id ? ` · ${T.agent} ${c.agent_id}` : ""} · ${T.alertLevel} ${severityName(c.alert_level)} · ${speakers} · ${T.textPolicy}: ${(T.redaction && T.redaction[c.redaction]) || words(c.redaction)}` }),
      el("table", { id: "turns" },
        el("thead", {}, el("tr", {}, ...T.columns
          .map((t) => el("th", { scope: "col", text: t })))),
        el("tbody", {}, ...c.turns.map((t) => el("tr", { class: `turn-${t.speaker}`, dataset: { turnId: String(t.turn_id) } },
          el("td", { text: String(t.turn_id) }),
          el("td", { text: T.speaker[t.speaker] || t.speaker }),
          el("td", { text: t.text ?? T.notKept }),
          el("td", { class: `valence ${t.valence < 0 ? "neg" : "pos"}`, text: fmt(t.valence) }),
          el("td", { class: `valence ${t.rolling_valence < 0 ? "neg" : "pos"}`, text: fmt(t.rolling_valence) }),
          el("td", { text: emotionList(t.top_emotions) }),
          el("td", {}, el("span", { class: `sev sev-${t.alert_level}`, text: severityName(t.alert_level) })))))));
  } catch (e) {
    $("conv-body").replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

// ---- heatmap ----------------------------------------------------------------------------------

function valenceColour(v) {
  const neutral = [247, 247, 247], neg = [178, 24, 43], pos = [33, 102, 172];
  const t = Math.min(1, Math.abs(v));
  const to = v < 0 ? neg : pos;
  const c = neutral.map((n, i) => Math.round(n + (to[i] - n) * t));
  return `rgb(${c.join(",")})`;
}

async function refreshHeatmap(generation) {
  try {
    const data = await api("/api/heatmap?" + query({ hours: state.filters.hours || "2" }));
    if (generation !== state.generation) return;
    const columns = [];
    for (let t = data.from; t <= data.to; t += data.bucket_secs) columns.push(t);
    const grid = $("heat-grid");
    if (!data.rows.length) {
      grid.replaceChildren(el("p", { class: "empty", text: T.noHeat }));
      return;
    }
    const focused = document.activeElement?.dataset?.cell;
    grid.replaceChildren(el("table", { "aria-label": T.heatLabel },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: T.queueColumn }),
        ...columns.map((t, i) => el("th", { scope: "col", text: i % 3 === 0 || i === columns.length - 1 ? hm(t) : "" },
          i % 3 === 0 || i === columns.length - 1 ? null : el("span", { class: "sr-only", text: hm(t) }))))),
      el("tbody", {}, ...data.rows.map((r) => {
        const name = [r.tenant, r.queue].filter(Boolean).join(" / ") || T.noQueueRow;
        const byStart = new Map(r.cells.map((c) => [c.start, c]));
        return el("tr", {}, el("th", { scope: "row", text: name }), ...columns.map((t) => {
          const c = byStart.get(t);
          const span = `${name}, ${hm(t)}–${hm(t + data.bucket_secs)}`;
          const text = c ? T.cell(span, c) : T.emptyCell(span);
          const td = el("td", {
            class: c ? "cell has" : "cell", tabindex: c ? "0" : undefined, title: text, "aria-label": text,
            dataset: { cell: `${name}@${t}`, queue: r.queue, tenant: r.tenant, start: String(t), turns: c ? String(c.turns) : undefined, valence: c ? String(c.mean_valence) : undefined, dominant: c?.dominant },
            onmouseenter: () => { $("heat-detail").textContent = text; },
            onfocus: () => { $("heat-detail").textContent = text; },
          });
          if (c) td.style.background = valenceColour(c.mean_valence);
          return td;
        }));
      }))));
    if (focused) document.querySelector(`[data-cell="${CSS.escape(focused)}"]`)?.focus();
  } catch (_) { /* status shows reachability */ }
}

// ---- wiring -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  translatePage(TEXT.zh.html);
  onSignedOut = showSignIn;
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("conv-close").addEventListener("click", () => $("conv-dialog").close());
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.filters = {
      tenant: $("f-tenant").value.trim(), queue: $("f-queue").value.trim(),
      min_severity: $("f-severity").value, hours: $("f-hours").value,
    };
    localStorage.setItem("emotion.filters", JSON.stringify(state.filters));
    start();
  });
  $("f-severity").addEventListener("change", () => $("filters").requestSubmit());
  $("f-hours").addEventListener("change", () => {
    state.filters.hours = $("f-hours").value;
    localStorage.setItem("emotion.filters", JSON.stringify(state.filters));
    refreshHeatmap(state.generation);
  });
  boot();
});
