// QA report: GET /api/report with the week-on-week change, and its CSV. No framework, no CDN.
"use strict";

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
      el("th", { scope: "row", text: m.metric }),
      el("td", { text: m.current }), el("td", { text: m.previous }), el("td", { text: m.change }))));
  $("frustrated").replaceChildren(...r.frustrated.map((f) =>
    el("li", { dataset: { conversation: f.conversation_id } },
      `${f.conversation_id} · queue ${f.queue} · ${f.language} · customer ${fmt(f.customer_rolling_valence)}`,
      f.escalation_phrases.length ? ` · heard ${f.escalation_phrases.join(", ")}` : "")));
  $("frustrated-empty").hidden = r.frustrated.length > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  shown = signedInPage("report", "report-error", load);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
});
