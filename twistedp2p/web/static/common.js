/*
 * Shared helpers of the twistedp2p dashboards: the API token, JSON calls,
 * the live event stream, DOM building (text only: names come from peers and
 * are never parsed as HTML) and formatting.  No framework, no build step.
 */
"use strict";

const P2P = (() => {
  const TOKEN_KEY = "twistedp2p-web-token";

  // -- the token: from the URL fragment (#token=...) or a prompt, kept in
  // sessionStorage for this tab only, never in a cookie.
  function takeTokenFromFragment() {
    const hash = window.location.hash.replace(/^#/, "");
    const params = new URLSearchParams(hash);
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", window.location.pathname + window.location.search + (rest ? "#" + rest : ""));
    }
  }
  takeTokenFromFragment();

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = token();
    if (t) h["X-P2P-Token"] = t;
    return h;
  }

  let tokenPrompt = null;
  function askToken(message) {
    if (tokenPrompt) return tokenPrompt;
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    const note = document.getElementById("token-note");
    note.textContent = message || "This dashboard needs its web token.";
    input.value = "";
    tokenPrompt = new Promise((resolve) => {
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        tokenPrompt = null;
        if (dialog.returnValue === "ok" && input.value.trim()) {
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        }
        resolve();
      });
      document.getElementById("token-ok").onclick = () => dialog.close("ok");
      document.getElementById("token-cancel").onclick = () => dialog.close("cancel");
      input.onkeydown = (e) => {
        if (e.key === "Enter") dialog.close("ok");
      };
      dialog.showModal();
      input.focus();
    });
    return tokenPrompt;
  }

  // -- JSON API: resolves {ok, status, data}; never throws for HTTP errors.
  async function api(path, options) {
    const opts = options || {};
    for (let attempt = 0; attempt < 3; attempt++) {
      const init = { method: opts.method || "GET", cache: "no-store", headers: headers() };
      if (opts.body !== undefined) {
        init.method = opts.method || "POST";
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(opts.body);
      }
      let response;
      try {
        response = await fetch("/api/" + path, init);
      } catch (e) {
        return { ok: false, status: 0, data: { error: "error: the dashboard cannot be reached (" + e.message + ")" } };
      }
      let data;
      try {
        data = await response.json();
      } catch (e) {
        data = { error: "error: unexpected answer (HTTP " + response.status + ")" };
      }
      if (response.status === 401 && attempt < 2) {
        await askToken(token() ? "That token was refused; enter the dashboard's web token." : undefined);
        continue;
      }
      return { ok: response.ok, status: response.status, data: data };
    }
    return { ok: false, status: 401, data: { error: "error: no valid web token" } };
  }

  // -- the event stream: SSE over fetch (so the token can travel in a
  // header); reconnects with back-off; no polling.
  function stream(handlers, onState) {
    let lastId = null;
    let delay = 1000;
    let stopped = false;

    function dispatch(block) {
      let event = "message";
      const data = [];
      let id = null;
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
      if (id !== null) lastId = id;
      if (!data.length) return;
      let payload;
      try {
        payload = JSON.parse(data.join("\n"));
      } catch (e) {
        return;
      }
      const handler = handlers[event] || handlers["*"];
      if (handler) {
        try {
          handler(payload, event);
        } catch (e) {
          console.error("handler for", event, "failed", e);
        }
      }
    }

    async function run() {
      while (!stopped) {
        onState("connecting");
        try {
          const h = headers({ Accept: "text/event-stream" });
          if (lastId !== null) h["Last-Event-ID"] = lastId;
          const response = await fetch("/api/events", { headers: h, cache: "no-store" });
          if (response.status === 401) {
            onState("locked");
            await askToken();
            continue;
          }
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          onState("live");
          delay = 1000;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            const blocks = buffer.split(/\r?\n\r?\n/);
            buffer = blocks.pop();
            blocks.forEach(dispatch);
          }
        } catch (e) {
          // fall through to the retry below
        }
        if (stopped) break;
        onState("offline");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 15000);
      }
    }
    run();
    return { stop: () => { stopped = true; } };
  }

  // -- DOM ------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(target, ...children) {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  // A table body: a row per item, or one cell saying why there is none.
  function fillTable(body, items, columns, empty, row) {
    if (!items.length) return replace(body, el("tr", {}, el("td", { class: "empty", colspan: columns }, empty)));
    return replace(body, items.map(row));
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function debounce(f, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => f(...args), ms);
    };
  }

  function streamPill(state) {
    const pill = document.getElementById("stream-state");
    if (!pill) return;
    const labels = { live: "live", connecting: "connecting…", offline: "reconnecting…", locked: "token needed" };
    pill.textContent = labels[state] || state;
    pill.className = "pill stream-" + state;
  }

  // -- formatting -------------------------------------------------------------
  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  }

  function rate(bps) {
    if (bps === null || bps === undefined) return "–";
    return bytes(Math.round(bps)) + "/s";
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function clock(t) {
    if (!t) return "–";
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }

  const pad = (n) => String(n).padStart(2, "0");
  function dateTime(t) {
    if (!t) return "–";
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // Time of day for today, else the date and minutes: short table cells.
  function when(t) {
    if (!t) return "–";
    const d = new Date(t * 1000);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  // Seconds between the server's clock and ours, so "ago" stays right.
  let skew = 0;
  function serverTime(t) {
    if (typeof t === "number") skew = t - Date.now() / 1000;
  }
  function ago(t) {
    if (!t) return "–";
    const s = Math.max(0, Date.now() / 1000 + skew - t);
    if (s < 2) return "just now";
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  function shortSha(sha) {
    return sha ? sha.slice(0, 12) + "…" : "unverified";
  }

  function shaCell(sha) {
    return el("td", { class: "mono sha", title: sha || "no SHA-256 (seed client)" }, shortSha(sha));
  }

  // -- the event log (shared by both pages) -----------------------------------
  const LABELS = {
    session_up: "session up",
    session_down: "session down",
    transfer_started: "transfer start",
    transfer_finished: "transfer end",
  };

  function badge(e) {
    let label = LABELS[e.kind] || e.kind.replace(/_/g, " ");
    if (e.kind === "transfer_finished" && e.outcome && e.outcome !== "done") label = "transfer failed";
    return label + (e.status ? " · " + e.status : "");
  }

  // The log card (static/_log.html, the same on both pages); `choices`
  // are the page's [kind, label] pairs for the kind filter, between "all
  // events" and the warning and error levels.
  function eventLog(options) {
    const list = document.getElementById("log");
    const filterInput = document.getElementById("log-filter");
    const kindSelect = document.getElementById("log-kinds");
    const max = options.max || 500;
    replace(
      kindSelect,
      [["", "all events"], ...options.choices, ["warn", "warnings"], ["error", "errors"]].map(([value, label]) =>
        el("option", { value: value }, label)
      )
    );
    const rows = [];
    const seen = new Set();

    function visible(e) {
      const kind = kindSelect.value;
      if (kind && e.kind !== kind && e.level !== kind) return false;
      const text = filterInput.value.trim().toLowerCase();
      return !text || (e.text || "").toLowerCase().includes(text) || (e.kind || "").includes(text);
    }

    function render(e) {
      const status = e.status ? " status-" + e.status : "";
      const row = el(
        "li",
        { class: "event level-" + e.level + " kind-" + e.kind + status, dataset: { kind: e.kind } },
        el("time", { datetime: new Date(e.time * 1000).toISOString() }, clock(e.time)),
        el("span", { class: "badge", title: e.kind }, badge(e)),
        el("span", { class: "text" }, e.text)
      );
      row.hidden = !visible(e);
      return row;
    }

    function add(e) {
      if (seen.has(e.id)) return;
      seen.add(e.id);
      rows.unshift({ e: e, node: render(e) });
      list.prepend(rows[0].node);
      while (rows.length > max) {
        const old = rows.pop();
        seen.delete(old.e.id);
        old.node.remove();
      }
      setText("log-count", rows.length + " events");
    }

    function refilter() {
      for (const r of rows) r.node.hidden = !visible(r.e);
    }
    filterInput.addEventListener("input", debounce(refilter, 100));
    kindSelect.addEventListener("change", refilter);

    // A fresh start (first connection, or the server restarted and its
    // event ids began again): forget what is shown, load what is kept.
    async function reload() {
      const r = await api("log?limit=" + max);
      if (!r.ok) return;
      rows.length = 0;
      seen.clear();
      list.replaceChildren();
      for (const e of r.data.events) add(e);
    }
    return { add: add, reload: reload };
  }

  function flash(id, text, level) {
    const node = document.getElementById(id);
    if (!node) return;
    node.textContent = text;
    node.className = "flash level-" + (level || "info");
    node.hidden = !text;
  }

  return {
    api, stream, askToken, token, el, replace, fillTable, setText, debounce, streamPill,
    bytes, rate, duration, clock, dateTime, when, ago, serverTime, shortSha, shaCell, eventLog, flash,
  };
})();
