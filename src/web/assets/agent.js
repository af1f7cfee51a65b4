// Agent view: the guidance for one agent (the path's /agent/{id}) over Server-Sent Events,
// resuming by the alert log's sequence. One card per conversation: its hand-off brief, then what
// happened since (mood turned / recovered, transfer asked, a repeated question); break
// suggestions on top. No framework, no CDN.
"use strict";

const agentId = decodeURIComponent(location.pathname.replace(/^\/agent\//, "").replace(/\/$/, ""));
const state = { seen: new Set(), lastSequence: 0, source: null, conversations: new Map(), breaks: [] };

// The page's language is common.js's LANG (`?lang=`, remembered, else the browser's). What
// the service wrote (details, approaches, opening lines) is in the conversation's language already.
const TEXT = {
  en: {
    title: "Agent assist", skip: "Skip to guidance", signOut: "Sign out", signIn: "Sign in",
    tokenLabel: "Access token (role agent, for this agent id; or supervisor)",
    tokenHint: "An operator creates agent tokens with",
    conversations: "Your conversations",
    empty: "No guidance yet. Briefs, mood changes and suggestions for your conversations appear here as they happen.",
    feed: { offline: "feed: offline", signedOut: "feed: signed out", connecting: "feed: connecting…", live: "feed: live", reconnecting: "feed: reconnecting…" },
    unknownToken: "That token is not known.", signedOut: "Signed out.", authOff: "auth off",
    kinds: { mood_turned: "Mood turned", mood_recovered: "Mood recovered", transfer_requested: "Transfer requested", repeated_question: "Asked again", break_suggested: "Take a break", handoff_brief: "Hand-off brief" },
    mood: { turned: "mood: turned", recovered: "mood: recovered", steady: "mood: steady" },
    trend: { falling: "falling", rising: "rising", steady: "steady" },
    outcome: { resigned: "resigned", negative: "negative", open_incident: "open incident", ok: "ok" },
    customer: (v) => `Customer ${v}`,
    scoreLine: (b) => ` · ${TEXT.en.trend[b.trend] || b.trend} (from ${fmt(b.trend_start)}) · ${b.customer_turns} customer turns, ${b.bot_turns} with the bot`,
    feeling: "Feeling: ", approach: "Approach: ", sayFirst: "Say first: ", asked: "They asked for",
    withheld: "(text withheld)", escalation: "Escalation heard: ", drops: "Where the mood dropped",
    earlier: "Earlier contacts", lowest: "lowest", turn: (n) => `turn ${n}`, firstAsked: "First asked: ",
  },
  zh: {
    title: "坐席助手", skip: "跳到提示", signOut: "退出", signIn: "登录",
    tokenLabel: "访问令牌（坐席角色，对应本坐席 ID；或班长）",
    tokenHint: "管理员用以下命令创建坐席令牌：",
    conversations: "您的会话",
    empty: "暂无提示。会话的交接摘要、情绪变化和建议会实时显示在这里。",
    feed: { offline: "推送：离线", signedOut: "推送：已退出", connecting: "推送：连接中…", live: "推送：实时", reconnecting: "推送：重新连接中…" },
    unknownToken: "无法识别该令牌。", signedOut: "已退出。", authOff: "未启用认证",
    kinds: { mood_turned: "情绪转差", mood_recovered: "情绪好转", transfer_requested: "要求转接", repeated_question: "重复提问", break_suggested: "建议休息", handoff_brief: "交接摘要" },
    mood: { turned: "情绪：转差", recovered: "情绪：好转", steady: "情绪：平稳" },
    trend: { falling: "下降", rising: "上升", steady: "平稳" },
    outcome: { resigned: "客户放弃", negative: "负面", open_incident: "告警未结", ok: "正常" },
    customer: (v) => `客户情绪分 ${v}`,
    scoreLine: (b) => ` · ${TEXT.zh.trend[b.trend] || b.trend}（起初 ${fmt(b.trend_start)}）· 客户发言 ${b.customer_turns} 轮，智能助手回复 ${b.bot_turns} 轮`,
    feeling: "情绪：", approach: "应对方式：", sayFirst: "开场白：", asked: "客户诉求",
    withheld: "（内容已隐去）", escalation: "听到的升级诉求：", drops: "情绪下降的轮次",
    earlier: "以往来电", lowest: "最低", turn: (n) => `第 ${n} 轮`, firstAsked: "第一次提问：",
  },
};
const T = TEXT[LANG];
const LABELS = T.kinds;
const emotions = emotionList;

function showSignIn(message) {
  if (state.source) state.source.close();
  $("assist").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  document.body.dataset.feed = "offline";
  $("feed-state").textContent = T.feed.signedOut;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  try {
    const who = await api("/api/session", { method: "POST", body: JSON.stringify({ token, view: "agent" }) });
    $("token").value = "";
    $("who").textContent = who.auth_enabled ? `${who.name} (${who.role})` : T.authOff;
    $("sign-out").hidden = !who.auth_enabled;
    await start();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? T.unknownToken : e.message;
  }
}

async function start() {
  let history;
  try {
    history = await api(`/api/assist/history?agent_id=${encodeURIComponent(agentId)}&limit=300`);
  } catch (e) {
    if (e.status === 401) return showSignIn(e.message);
    $("signin").hidden = true;
    $("assist").hidden = false;
    $("assist-error").textContent = e.message;
    return;
  }
  $("signin").hidden = true;
  $("assist").hidden = false;
  $("assist-error").textContent = "";
  for (const event of history.alerts.slice().reverse()) apply(event, false);
  state.lastSequence = Math.max(state.lastSequence, history.last_sequence);
  render();
  listen();
}

function listen() {
  if (state.source) state.source.close();
  const q = new URLSearchParams({ agent_id: agentId, after: String(state.lastSequence) });
  const source = new EventSource("/api/assist/stream?" + q);
  state.source = source;
  document.body.dataset.feed = "connecting";
  $("feed-state").textContent = T.feed.connecting;
  source.addEventListener("open", () => {
    document.body.dataset.feed = "live";
    $("feed-state").textContent = T.feed.live;
  });
  source.addEventListener("alert", (e) => {
    if (apply(JSON.parse(e.data), true)) render();
  });
  source.addEventListener("reset", () => { source.close(); state.seen.clear(); state.conversations.clear(); state.breaks = []; state.lastSequence = 0; start(); });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      document.body.dataset.feed = "offline";
      $("feed-state").textContent = T.feed.offline;
      setTimeout(start, 3000);
    } else {
      document.body.dataset.feed = "reconnecting";
      $("feed-state").textContent = T.feed.reconnecting;
    }
  });
}

// Adds one event; true when it was new.
function apply(event, live) {
  if (state.seen.has(event.sequence)) return false;
  state.seen.add(event.sequence);
  state.lastSequence = Math.max(state.lastSequence, event.sequence);
  if (event.kind === "break_suggested") {
    state.breaks.push(event);
  } else {
    let c = state.conversations.get(event.conversation_id);
    if (!c) {
      c = { id: event.conversation_id, brief: null, events: [], updated: 0 };
      state.conversations.set(event.conversation_id, c);
    }
    if (event.kind === "handoff_brief") c.brief = event;
    else c.events.push(event);
    c.updated = event.sequence;
  }
  if (live) $("announcer").textContent = `${LABELS[event.kind] || event.kind}: ${event.conversation_id}. ${event.detail}`;
  return true;
}

// The brief (its JSON) of a handoff_brief event.
function briefView(brief, event) {
  return el("section", { class: "brief", "aria-label": LABELS.handoff_brief, lang: brief.language },
    el("p", { class: "score" },
      el("strong", { text: T.customer(fmt(brief.customer_rolling_valence)) }),
      T.scoreLine(brief)),
    brief.dominant_emotions.length ? el("p", { class: "emotions", text: T.feeling + emotions(brief.dominant_emotions) }) : null,
    el("p", { class: "approach" }, el("strong", { text: T.approach }), brief.approach),
    el("p", { class: "opening" }, el("strong", { text: T.sayFirst }), el("q", { text: brief.opening_line })),
    brief.requests.length ? el("div", {},
      el("h4", { text: T.asked }),
      el("ul", { class: "requests" }, brief.requests.map((r) =>
        el("li", { dataset: { times: String(r.times) } },
          el("q", { text: r.excerpt || T.withheld }),
          r.times > 1 ? el("span", { class: "times", text: ` ×${r.times}` }) : null)))) : null,
    brief.escalation_phrases.length ? el("p", { class: "phrases", text: T.escalation + brief.escalation_phrases.join(", ") }) : null,
    brief.mood_drops.length ? el("div", {},
      el("h4", { text: T.drops }),
      el("ol", { class: "drops" }, brief.mood_drops.map((d) =>
        el("li", { dataset: { turn: String(d.turn_id) } },
          `${T.turn(d.turn_id)} · ${fmt(d.valence)} · ${emotions(d.top_emotions)} `,
          d.excerpt ? el("q", { text: d.excerpt }) : null)))) : null,
    (brief.earlier_contacts || []).length ? el("div", {},
      el("h4", { text: T.earlier }),
      el("ol", { class: "earlier" }, brief.earlier_contacts.map((c) =>
        el("li", { dataset: { outcome: c.outcome } },
          `${c.ended_at_ms ? new Date(c.ended_at_ms).toLocaleDateString(LANG === "zh" ? "zh-CN" : undefined) : ""} · ${T.outcome[c.outcome] || c.outcome} · ${T.lowest} ${fmt(c.lowest_score)}`,
          c.emotions.length ? ` · ${c.emotions.map(emotionName).join(", ")}` : "")))) : null,
    el("p", { class: "detail hint", text: event.detail }),
  );
}

function eventView(e) {
  const recovered = e.kind === "mood_recovered";
  return el("li", { class: "guidance", dataset: { kind: e.kind, sequence: String(e.sequence) } },
    el("strong", { text: LABELS[e.kind] || e.kind }), ` · ${T.turn(e.turn_id)} · `,
    el("span", { class: "detail", text: e.detail }),
    e.suggestion ? el("p", { class: recovered ? "suggestion good" : "suggestion", text: e.suggestion }) : null,
    e.kind === "repeated_question" && e.evidence.length
      ? el("p", { class: "evidence" }, T.firstAsked, el("q", { text: e.evidence[0].excerpt || T.withheld }), ` (${T.turn(e.evidence[0].turn_id)})`)
      : null);
}

function render() {
  const list = $("guidance-list");
  list.replaceChildren();
  for (const b of state.breaks.slice(-1)) {
    list.append(el("li", { class: "card break", dataset: { kind: "break_suggested" } },
      el("h3", { text: LABELS.break_suggested }), el("p", { text: b.detail }), b.suggestion ? el("p", { class: "suggestion", text: b.suggestion }) : null));
  }
  const conversations = [...state.conversations.values()].sort((a, b) => b.updated - a.updated);
  for (const c of conversations) {
    const turned = c.events.filter((e) => e.kind === "mood_turned").map((e) => e.alert_id);
    const recovered = new Set(c.events.filter((e) => e.kind === "mood_recovered").map((e) => e.alert_id));
    const mood = turned.some((id) => !recovered.has(id)) ? "turned" : recovered.size ? "recovered" : "steady";
    const lang = c.brief?.brief?.language || "";
    list.append(el("li", { class: "card", dataset: { conversation: c.id, mood }, lang: lang || undefined },
      el("h3", {}, c.id, el("span", { class: `mood mood-${mood}`, text: ` ${T.mood[mood]}` })),
      c.brief ? briefView(c.brief.brief, c.brief) : null,
      c.events.length ? el("ol", { class: "events" }, c.events.map(eventView)) : null));
  }
  $("guidance-empty").hidden = list.children.length > 0;
  $("guidance-count").textContent = conversations.length ? `(${conversations.length})` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("agent-name").textContent = agentId;
  translatePage({});
  document.title = `${T.title} · ${agentId}`;
  for (const [id, text] of [["title", T.title], ["skip", T.skip], ["sign-out", T.signOut], ["signin-title", T.signIn],
    ["signin-submit", T.signIn], ["token-label", T.tokenLabel], ["token-hint", T.tokenHint], ["guidance-title-text", T.conversations],
    ["guidance-empty", T.empty], ["feed-state", T.feed.offline]]) $(id).textContent = text;
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" }).catch(() => {});
    showSignIn(T.signedOut);
  });
  start();
});
