// What the dashboard's pages share: the JSON API client, the element builder, number formats,
// the interface language. Loaded before each page's own script. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);

// The interface language: `?lang=zh` / `?lang=en` (remembered for the next pages), else the one
// chosen before, else the browser's first language. What the service wrote (alert details,
// suggestions, approaches) is in the conversation's language already.
const LANG = (() => {
  const asked = new URLSearchParams(location.search).get("lang");
  let chosen = asked;
  try {
    if (asked) localStorage.setItem("emotion.lang", asked);
    else chosen = localStorage.getItem("emotion.lang");
  } catch (_) { /* storage off: the browser's language decides */ }
  chosen = chosen || (navigator.languages || [])[0] || navigator.language || "";
  return /^zh/i.test(chosen) ? "zh" : "en";
})();

// What every page says, in both languages; a page's own words are in its script.
const COMMON_TEXT = {
  en: {
    unknownToken: "That token is not known.", signedOut: "Signed out.", authOff: "auth off",
    signInToContinue: "Sign in to continue.", otherLanguage: "中文", otherLanguageName: "切换到中文",
  },
  zh: {
    unknownToken: "无法识别该令牌。", signedOut: "已退出。", authOff: "未启用认证",
    signInToContinue: "请登录后继续。", otherLanguage: "English", otherLanguageName: "Switch to English",
    severity: { none: "无", warning: "警告", critical: "严重", urgent: "紧急" },
    // Alert and guidance kinds as the service names them.
    kind: {
      rolling_valence: "情绪分过低", escalation_request: "要求升级", repetition: "重复诉求",
      sustained_negativity: "持续负面", agent_strain: "坐席压力", mood_turned: "情绪转差", mood_recovered: "情绪好转",
      transfer_requested: "要求转接", repeated_question: "重复提问", break_suggested: "建议休息",
      handoff_brief: "交接摘要", repeat_contact: "重复来电",
    },
    state: { raised: "触发", escalated: "升级", resolved: "解除", acknowledged: "已确认" },
    // The English model's GoEmotions labels; a label not here is shown as the model names it.
    emotion: {
      admiration: "钦佩", amusement: "愉快", anger: "愤怒", annoyance: "烦躁", approval: "认可", caring: "关心",
      confusion: "困惑", curiosity: "好奇", desire: "渴望", disappointment: "失望", disapproval: "不认可",
      disgust: "厌恶", embarrassment: "尴尬", excitement: "兴奋", fear: "担心", gratitude: "感谢", grief: "悲痛",
      joy: "高兴", love: "喜爱", nervousness: "紧张", optimism: "乐观", pride: "自豪", realization: "醒悟",
      relief: "宽慰", remorse: "歉疚", sadness: "难过", surprise: "惊讶", neutral: "平静",
    },
  },
};
const CT = COMMON_TEXT[LANG];
const emotionName = (label) => (CT.emotion && CT.emotion[label]) || label;
const severityName = (s) => (CT.severity && CT.severity[(s || "").toLowerCase()]) || s;
const kindName = (k) => (CT.kind && CT.kind[k]) || (k || "").replaceAll("_", " ");
const stateName = (s) => (CT.state && CT.state[(s || "").toLowerCase()]) || (s || "").toLowerCase();

// The page's fixed words in the interface language: `zh` maps the keys that elements name in
// `data-i18n` (their text), `data-i18n-placeholder`, `data-i18n-title` and
// `data-i18n-aria-label` to Chinese; in English the page stays as written. Adds the language
// switch to the header.
function translatePage(zh) {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  if (LANG === "zh") {
    for (const node of document.querySelectorAll("[data-i18n]")) {
      if (zh[node.dataset.i18n] !== undefined) node.textContent = zh[node.dataset.i18n];
    }
    for (const attr of ["placeholder", "title", "aria-label"]) {
      const data = "data-i18n-" + attr;
      for (const node of document.querySelectorAll(`[${data}]`)) {
        const text = zh[node.getAttribute(data)];
        if (text !== undefined) node.setAttribute(attr, text);
      }
    }
  }
  const switchTo = new URL(location.href);
  switchTo.searchParams.set("lang", LANG === "zh" ? "en" : "zh");
  const link = el("a", { id: "language", href: switchTo.pathname + switchTo.search, lang: LANG === "zh" ? "en" : "zh-CN",
    title: CT.otherLanguageName, text: CT.otherLanguage });
  document.querySelector("header .indicators")?.prepend(link);
}

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
    if (response.status === 401 && onSignedOut) onSignedOut(body.error || CT.signInToContinue);
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
const emotionList = (list) => (list || []).map((e) => `${emotionName(e.label)} ${pct(e.p)}`).join(" · ");

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
      $("who").textContent = who.auth_enabled ? `${who.name} (${who.role})` : CT.authOff;
      $("sign-out").hidden = !who.auth_enabled;
      await load();
    } catch (e) {
      $("signin-error").textContent = e.status === 401 ? CT.unknownToken : e.message;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" }).catch(() => {});
    showSignIn(CT.signedOut);
  });
  onSignedOut = showSignIn;
  return shown;
}
