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
  $("feed-state").textContent = "feed: signed out";
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
    $("signin-error").textContent = e.status === 401 ? "That token is not known." : e.message;
  }
}

async function signOut() {
  await api("/api/session", { method: "DELETE" }).catch(() => {});
  showSignIn("Signed out.");
}

async function refreshStatus() {
  try {
    const s = await api("/api/status");
    const h = $("health");
    h.dataset.health = s.health;
    h.textContent = `${s.health === "SERVING" ? "●" : "▲"} ${s.health} · model ${s.model.version}` +
      (s.model.shadow ? ` (shadow ${s.model.shadow})` : "") +
      (s.model.languages || []).map((l) => ` · ${l.language} ${l.version}`).join("");
    h.title = `Model sha256 ${s.model.sha256.slice(0, 12)}…, ${s.model.labels} labels, ` +
      `${s.conversations_tracked} conversations tracked, redaction ${s.redaction}`;
    return s;
  } catch (e) {
    if (e.status !== 401) {
      $("health").dataset.health = "unreachable";
      $("health").textContent = "▲ service unreachable";
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
    : "auth off";
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
  $("feed-state").textContent = "feed: connecting";
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
    $("feed-state").textContent = "feed: live";
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
      $("feed-state").textContent = "feed: offline";
      setTimeout(() => generation === state.generation && boot(), 3000);
    } else {
      document.body.dataset.feed = "reconnecting";
      $("feed-state").textContent = "feed: reconnecting…";
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
    $("announcer").textContent = `${alert.severity} alert: ${words(alert.kind)} on ${alert.conversation_id}` +
      (alert.queue ? ` in ${alert.queue}` : "");
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
  $("alert-count").textContent = `${views.length} incident${views.length === 1 ? "" : "s"}, ${open} open and unacknowledged`;
  $("alerts-empty").hidden = views.length > 0;
}

function alertCard(v, note) {
  const a = v.main;
  const excerpt = [...(a.evidence || [])].reverse().find((e) => e.excerpt)?.excerpt;
  const history = v.events.filter((e) => e.state !== "ACKNOWLEDGED")
    .map((e) => `${e.state.toLowerCase()} ${clock(e.created_at_ms)}`).join(" → ");
  const status = v.ack
    ? `Acknowledged by ${v.ack.acknowledged_by} at ${clock(v.ack.created_at_ms)}${v.ack.note ? `: “${v.ack.note}”` : ""}`
    : v.last.state === "RESOLVED" ? "Resolved, not acknowledged" : "Open, not acknowledged";
  const card = el("li", {
    class: "alert",
    tabindex: "-1",
    "aria-label": `${a.severity} ${words(a.kind)} alert on ${a.conversation_id}`,
    dataset: {
      alertId: v.id, conversation: a.conversation_id, severity: a.severity, state: v.last.state,
      acknowledged: String(Boolean(v.ack)), sequence: String(v.last.sequence), receivedAt: String(v.receivedAt),
    },
  },
  el("div", { class: "alert-head" },
    el("span", { class: `sev sev-${a.severity}`, text: a.severity }),
    el("strong", { text: words(a.kind) }),
    el("time", { datetime: new Date(a.created_at_ms).toISOString(), text: clock(a.created_at_ms) })),
  el("p", { class: "where" },
    el("button", { class: "link", type: "button", text: a.conversation_id, onclick: () => openConversation(a.conversation_id) }),
    ` · ${[a.tenant, a.queue].filter(Boolean).join(" / ") || "no queue"}${a.agent_id ? " · agent " + a.agent_id : ""}` +
    ` · rolling ${fmt(a.rolling_valence)} (trend ${fmt(a.trend_start)} → ${fmt(a.trend_now)})`),
  a.detail ? el("p", { class: "detail", text: a.detail }) : null,
  excerpt ? el("blockquote", { class: "excerpt", text: excerpt }) : null,
  a.dominant_emotions?.length ? el("p", { class: "emotions", text: "Dominant: " + emotionList(a.dominant_emotions) }) : null,
  a.suggestion ? el("p", { class: "suggestion", text: "Suggested: " + a.suggestion }) : null,
  el("p", { class: "status", text: `${status} · ${history}` }),
  v.ack ? null : el("form", { class: "ack", onsubmit: (e) => { e.preventDefault(); acknowledge(v.id, e.target); } },
    el("input", { name: "note", "aria-label": `Note for the alert on ${a.conversation_id}`, placeholder: "note (optional)", maxlength: "1024", value: note || undefined }),
    el("button", { class: "ack-button", type: "submit", text: "Acknowledge" }),
    el("span", { class: "error", role: "alert" })));
  return card;
}

async function acknowledge(alertId, form) {
  const note = form.querySelector("input").value;
  const supervisor = $("f-name").value.trim();
  if (!state.identity.auth_enabled) {
    if (!supervisor) {
      form.querySelector(".error").textContent = "Enter your name in “Your name” first: it is recorded.";
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
    $("announcer").textContent = `Acknowledged by ${event.acknowledged_by}`;
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
    ? `Rolling score over ${values.length} customer turns, from ${fmt(values[0])} to ${fmt(values[values.length - 1])}`
    : "No customer turns yet");
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
    $("conv-count").textContent = `${data.conversations.length} of ${data.matched}`;
    $("conv-empty").hidden = data.conversations.length > 0;
    const focused = document.activeElement?.dataset?.open;
    $("conv-rows").replaceChildren(...data.conversations.map((c) => el("tr", { dataset: { conversationId: c.conversation_id } },
      el("td", {}, el("button", { class: "link", type: "button", dataset: { open: c.conversation_id },
        text: c.conversation_id, onclick: () => openConversation(c.conversation_id) })),
      el("td", { text: [c.tenant, c.queue].filter(Boolean).join(" / ") || "—" }),
      el("td", { class: `valence ${c.customer_rolling < 0 ? "neg" : "pos"}`, text: c.customer_rolling === null ? "—" : fmt(c.customer_rolling) }),
      el("td", {}, sparkline(c.trajectory)),
      el("td", { text: emotionList(c.dominant_emotions) }),
      el("td", {}, el("span", { class: `sev sev-${c.alert_level}`, text: c.alert_level })))));
    if (focused) document.querySelector(`[data-open="${CSS.escape(focused)}"]`)?.focus();
  } catch (_) { /* status shows reachability */ }
}

async function openConversation(id) {
  const dialog = $("conv-dialog");
  $("conv-title").textContent = `Conversation ${id}`;
  $("conv-body").replaceChildren(el("p", { text: "Loading…" }));
  if (!dialog.open) dialog.showModal();
  try {
    const c = await api(`/api/conversations/${encodeURIComponent(id)}`);
    const speakers = c.speakers.map((s) => `${s.speaker} ${fmt(s.rolling_valence)} over ${s.turns} turns`).join(" · ");
    $("conv-body").replaceChildren(
      el("p", { class: "where", text: `${[c.tenant, c.queue].filter(Boolean).join(" / ") || "no queue"}` +
        `${c.agent_id ? " · agent " + c.agent_id : ""} · alert ${c.alert_level} · ${speakers} · text: ${words(c.redaction)}` }),
      el("table", { id: "turns" },
        el("thead", {}, el("tr", {}, ...["Turn", "Speaker", "Text", "Valence", "Speaker's rolling", "Top emotions", "Alert"]
          .map((t) => el("th", { scope: "col", text: t })))),
        el("tbody", {}, ...c.turns.map((t) => el("tr", { class: `turn-${t.speaker}`, dataset: { turnId: String(t.turn_id) } },
          el("td", { text: String(t.turn_id) }),
          el("td", { text: t.speaker }),
          el("td", { text: t.text ?? "(not kept)" }),
          el("td", { class: `valence ${t.valence < 0 ? "neg" : "pos"}`, text: fmt(t.valence) }),
          el("td", { class: `valence ${t.rolling_valence < 0 ? "neg" : "pos"}`, text: fmt(t.rolling_valence) }),
          el("td", { text: emotionList(t.top_emotions) }),
          el("td", {}, el("span", { class: `sev sev-${t.alert_level}`, text: t.alert_level })))))));
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
      grid.replaceChildren(el("p", { class: "empty", text: "No customer turns in this window." }));
      return;
    }
    const focused = document.activeElement?.dataset?.cell;
    grid.replaceChildren(el("table", { "aria-label": "Mean customer valence per queue and 5 minutes" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Queue" }),
        ...columns.map((t, i) => el("th", { scope: "col", text: i % 3 === 0 || i === columns.length - 1 ? hm(t) : "" },
          i % 3 === 0 || i === columns.length - 1 ? null : el("span", { class: "sr-only", text: hm(t) }))))),
      el("tbody", {}, ...data.rows.map((r) => {
        const name = [r.tenant, r.queue].filter(Boolean).join(" / ") || "(no queue)";
        const byStart = new Map(r.cells.map((c) => [c.start, c]));
        return el("tr", {}, el("th", { scope: "row", text: name }), ...columns.map((t) => {
          const c = byStart.get(t);
          const span = `${name}, ${hm(t)}–${hm(t + data.bucket_secs)}`;
          const text = c
            ? `${span}: mean valence ${fmt(c.mean_valence)} over ${c.turns} customer turns; dominant ${c.dominant} (${c.dominant_turns})` +
              (c.dominant_emotion && c.dominant_emotion !== c.dominant ? `, strongest emotion ${c.dominant_emotion} (${c.dominant_emotion_turns})` : "")
            : `${span}: no customer turns`;
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
