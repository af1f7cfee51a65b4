// What both dashboard pages share: the JSON API client, the element builder, number formats.
// Loaded before each page's own script. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);

// Called with the server's message when a call comes back 401 (the page shows its sign-in).
let onSignedOut = null;

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: options.body ? { "content-type": "application/json" } : {},
    ...options,
  });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401 && onSignedOut) onSignedOut(body.error || "Sign in to continue.");
    throw new HttpError(response.status, body.error || response.statusText);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) node.dataset[dk] = dv;
    }
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const fmt = (v) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2);
const pct = (p) => `${Math.round(p * 100)}%`;
const emotionList = (list) => (list || []).map((e) => `${e.label} ${pct(e.p)}`).join(" · ");

// A page behind a supervisor token (silent customers, QA report): its #signin form, sign-out
// button and main section `mainId`. `load` fetches and renders; it calls `shown(error)` once it
// has an answer. Returns `shown`.
function signedInPage(mainId, errorId, load) {
  const showSignIn = (message) => {
    $(mainId).hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  };
  const shown = (error) => {
    if (error && error.status === 401) return showSignIn(error.message);
    $("signin").hidden = true;
    $(mainId).hidden = false;
    $(errorId).textContent = error ? error.message : "";
  };
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const who = await api("/api/session", { method: "POST", body: JSON.stringify({ token: $("token").value.trim() }) });
      $("token").value = "";
      $("who").textContent = who.auth_enabled ? `${who.name} (${who.role})` : "auth off";
      $("sign-out").hidden = !who.auth_enabled;
      await load();
    } catch (e) {
      $("signin-error").textContent = e.status === 401 ? "That token is not known." : e.message;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" }).catch(() => {});
    showSignIn("Signed out.");
  });
  onSignedOut = showSignIn;
  return shown;
}
