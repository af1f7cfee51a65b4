// Agent view: the guidance for one agent (the path's /agent/{id}) over Server-Sent Events,
// resuming by the alert log's sequence. One card per conversation: its hand-off brief, then what
// happened since (mood turned / recovered, transfer asked, a repeated question); break
// suggestions on top. No framework, no CDN.
"use strict";

const agentId = decodeURIComponent(location.pathname.replace(/^\/agent\//, "").replace(/\/$/, ""));
const state = { seen: new Set(), lastSequence: 0, source: null, conversations: new Map(), breaks: [] };

const LABELS = {
  mood_turned: "Mood turned",
  mood_recovered: "Mood recovered",
  transfer_requested: "Transfer requested",
  repeated_question: "Asked again",
  break_suggested: "Take a break",
  handoff_brief: "Hand-off brief",
};

function showSignIn(message) {
  if (state.source) state.source.close();
  $("assist").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  document.body.dataset.feed = "offline";
  $("feed-state").textContent = "feed: signed out";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  try {
    const who = await api("/api/session", { method: "POST", body: JSON.stringify({ token, view: "agent" }) });
    $("token").value = "";
    $("who").textContent = who.auth_enabled ? `${who.name} (${who.role})` : "auth off";
    $("sign-out").hidden = !who.auth_enabled;
    await start();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? "That token is not known." : e.message;
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
  $("feed-state").textContent = "feed: connecting…";
  source.addEventListener("open", () => {
    document.body.dataset.feed = "live";
    $("feed-state").textContent = "feed: live";
  });
  source.addEventListener("alert", (e) => {
    if (apply(JSON.parse(e.data), true)) render();
  });
  source.addEventListener("reset", () => { source.close(); state.seen.clear(); state.conversations.clear(); state.breaks = []; state.lastSequence = 0; start(); });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      document.body.dataset.feed = "offline";
      $("feed-state").textContent = "feed: offline";
      setTimeout(start, 3000);
    } else {
      document.body.dataset.feed = "reconnecting";
      $("feed-state").textContent = "feed: reconnecting…";
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
  return el("section", { class: "brief", "aria-label": "Hand-off brief", lang: brief.language },
    el("p", { class: "score" },
      el("strong", { text: `Customer ${fmt(brief.customer_rolling_valence)}` }),
      ` · ${brief.trend} (from ${fmt(brief.trend_start)}) · ${brief.customer_turns} customer turns, ${brief.bot_turns} with the bot`),
    brief.dominant_emotions.length ? el("p", { class: "emotions", text: `Feeling: ${emotionList(brief.dominant_emotions)}` }) : null,
    el("p", { class: "approach" }, el("strong", { text: "Approach: " }), brief.approach),
    el("p", { class: "opening" }, el("strong", { text: "Say first: " }), el("q", { text: brief.opening_line })),
    brief.requests.length ? el("div", {},
      el("h4", { text: "They asked for" }),
      el("ul", { class: "requests" }, brief.requests.map((r) =>
        el("li", { dataset: { times: String(r.times) } },
          el("q", { text: r.excerpt || "(text withheld)" }),
          r.times > 1 ? el("span", { class: "times", text: ` ×${r.times}` }) : null)))) : null,
    brief.escalation_phrases.length ? el("p", { class: "phrases", text: `Escalation heard: ${brief.escalation_phrases.join(", ")}` }) : null,
    brief.mood_drops.length ? el("div", {},
      el("h4", { text: "Where the mood dropped" }),
      el("ol", { class: "drops" }, brief.mood_drops.map((d) =>
        el("li", { dataset: { turn: String(d.turn_id) } },
          `turn ${d.turn_id} · ${fmt(d.valence)} · ${emotionList(d.top_emotions)} `,
          d.excerpt ? el("q", { text: d.excerpt }) : null)))) : null,
    (brief.earlier_contacts || []).length ? el("div", {},
      el("h4", { text: "Earlier contacts" }),
      el("ol", { class: "earlier" }, brief.earlier_contacts.map((c) =>
        el("li", { dataset: { outcome: c.outcome } },
          `${c.ended_at_ms ? new Date(c.ended_at_ms).toLocaleDateString() : ""} · ${c.outcome.replace("_", " ")} · lowest ${fmt(c.lowest_score)}`,
          c.emotions.length ? ` · ${c.emotions.join(", ")}` : "")))) : null,
    el("p", { class: "detail hint", text: event.detail }),
  );
}

function eventView(e) {
  const recovered = e.kind === "mood_recovered";
  return el("li", { class: "guidance", dataset: { kind: e.kind, sequence: String(e.sequence) } },
    el("strong", { text: LABELS[e.kind] || e.kind }), ` · turn ${e.turn_id} · `,
    el("span", { class: "detail", text: e.detail }),
    e.suggestion ? el("p", { class: recovered ? "suggestion good" : "suggestion", text: e.suggestion }) : null,
    e.kind === "repeated_question" && e.evidence.length
      ? el("p", { class: "evidence" }, "First asked: ", el("q", { text: e.evidence[0].excerpt || "(text withheld)" }), ` (turn ${e.evidence[0].turn_id})`)
      : null);
}

function render() {
  const list = $("guidance-list");
  list.replaceChildren();
  for (const b of state.breaks.slice(-1)) {
    list.append(el("li", { class: "card break", dataset: { kind: "break_suggested" } },
      el("h3", { text: "Take a break" }), el("p", { text: b.detail }), b.suggestion ? el("p", { class: "suggestion", text: b.suggestion }) : null));
  }
  const conversations = [...state.conversations.values()].sort((a, b) => b.updated - a.updated);
  for (const c of conversations) {
    const turned = c.events.filter((e) => e.kind === "mood_turned").map((e) => e.alert_id);
    const recovered = new Set(c.events.filter((e) => e.kind === "mood_recovered").map((e) => e.alert_id));
    const mood = turned.some((id) => !recovered.has(id)) ? "turned" : recovered.size ? "recovered" : "steady";
    const lang = c.brief?.brief?.language || "";
    list.append(el("li", { class: "card", dataset: { conversation: c.id, mood }, lang: lang || undefined },
      el("h3", {}, c.id, el("span", { class: `mood mood-${mood}`, text: ` mood: ${mood}` })),
      c.brief ? briefView(c.brief.brief, c.brief) : null,
      c.events.length ? el("ol", { class: "events" }, c.events.map(eventView)) : null));
  }
  $("guidance-empty").hidden = list.children.length > 0;
  $("guidance-count").textContent = conversations.length ? `(${conversations.length})` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("agent-name").textContent = agentId;
  document.title = `Agent assist · ${agentId}`;
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" }).catch(() => {});
    showSignIn("Signed out.");
  });
  start();
});
