// Silent customers: the call-back list (GET /api/customers/silent), its CSV export, and
// recording a call-back. No framework, no CDN.
"use strict";

const OUTCOMES = { resigned: "gave up", negative: "negative", open_incident: "open incident", ok: "ok" };

function query() {
  const q = new URLSearchParams({ limit: "200" });
  const tenant = $("tenant").value.trim();
  const days = $("in-days").value.trim();
  if (tenant) q.set("tenant", tenant);
  if (days && days !== "0") q.set("in_days", days);
  return q;
}

let shown = null;

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
    const button = el("button", { type: "button", class: "called", text: "Mark called" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/api/customers/${encodeURIComponent(s.customer_key)}/called`, { method: "POST", body: "{}" });
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
      el("td", {}, el("span", { class: `outcome outcome-${last.outcome}`, text: OUTCOMES[last.outcome] || last.outcome }),
        " · ", el("span", { class: "conversation", text: last.conversation_id }), last.queue ? ` (${last.queue})` : ""),
      el("td", { text: last.ended_at_ms ? new Date(last.ended_at_ms).toLocaleString() : "" }),
      el("td", { text: fmt(last.lowest_score || 0) }),
      el("td", { text: (last.emotions || []).join(" · ") }),
      el("td", {}, button)));
  }
  $("silent-table").hidden = page.customers.length === 0;
  $("silent-empty").hidden = page.customers.length > 0;
  $("silent-count").textContent = page.total ? `(${page.total})` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  shown = signedInPage("customers", "customers-error", load);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
});
