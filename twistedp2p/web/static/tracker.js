/* The tracker dashboard: peers, catalogue, discover/ping/evict, event log. */
"use strict";

(() => {
  const { api, el, replace, setText, debounce } = P2P;
  let peers = [];
  const log = P2P.eventLog({
    choices: [
      ["session_up", "sessions up"],
      ["session_down", "sessions down"],
      ["publish", "publishes"],
      ["unpublish", "unpublishes"],
      ["fetch", "lookups"],
      ["evicted", "evictions"],
      ["rejected", "rejected input"],
    ],
  });

  // -- status ------------------------------------------------------------------
  async function loadStatus() {
    const r = await api("status");
    if (!r.ok) return;
    P2P.serverTime(r.data.time);
    setText("tracker-id", r.data.tracker_id);
    setText("heartbeat", "every " + r.data.heartbeat + " s");
    setText("misses", String(r.data.heartbeat_misses));
  }

  // -- peers -------------------------------------------------------------------
  async function loadPeers() {
    const r = await api("peers");
    if (r.ok) {
      P2P.serverTime(r.data.time);
      renderPeers(r.data.peers);
    }
  }

  function protocolTag(p) {
    const kind = p.seed
      ? el("span", { class: "tag seed", title: "seed-protocol client (no version, no heartbeat)" }, "seed")
      : el("span", { class: "tag native" }, "v" + p.version);
    const key = p.authenticated
      ? el("span", { class: "tag ok mono", title: "signed hello; key fingerprint" }, p.fingerprint)
      : el("span", { class: "tag unauth", title: "no signed hello: the hostname is not proven" }, "unauthenticated");
    return el("span", { class: "nowrap" }, kind, " ", key);
  }

  function renderPeers(list) {
    peers = list;
    setText("peer-count", String(list.length));
    setText("peers-count", list.length ? list.length + " online" : "");
    P2P.fillTable(
      "peers-body",
      list,
      8,
      "no peer is online",
      (p) =>
        el(
          "tr",
          { dataset: { session: p.session_id, hostname: p.hostname } },
          el("td", { class: "host nowrap" }, el("b", {}, p.hostname)),
          el("td", { class: "mono" }, p.ip),
          el("td", { class: "num mono" }, String(p.p2p_port)),
          el("td", {}, protocolTag(p)),
          el("td", { class: "nowrap", title: P2P.dateTime(p.connected_at) }, P2P.when(p.connected_at)),
          el(
            "td",
            { class: "ago nowrap", dataset: { t: p.last_seen }, title: P2P.dateTime(p.last_seen) },
            P2P.ago(p.last_seen),
            p.missed ? el("span", { class: "tag bad", title: "unanswered heartbeat pings" }, " " + p.missed + " missed") : null
          ),
          el("td", { class: "num" }, String(p.files)),
          el(
            "td",
            { class: "actions" },
            el("button", { type: "button", onclick: () => discover(p.hostname) }, "Discover"),
            el("button", { type: "button", onclick: () => ping(p.hostname) }, "Ping"),
            el("button", { type: "button", class: "danger", onclick: () => evict(p) }, evictLabel(p.session_id))
          )
        )
    );
  }

  // Only the "… ago" texts change with time: refresh them locally.
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.ago")) {
      const first = cell.firstChild;
      if (first && first.nodeType === Node.TEXT_NODE) first.textContent = P2P.ago(Number(cell.dataset.t));
    }
  }, 1000);

  async function discover(hostname) {
    P2P.flash("peer-flash", "discovering " + hostname + "…", "info");
    const r = await api("discover?hostname=" + encodeURIComponent(hostname));
    const box = document.getElementById("peer-result");
    if (!r.ok) {
      P2P.flash("peer-flash", r.data.error, "error");
      box.hidden = true;
      return;
    }
    P2P.flash("peer-flash", hostname + (r.data.online ? " is online" : " is offline") + ": " + r.data.files.length + " published file(s)", r.data.online ? "ok" : "warn");
    replace(
      box,
      el("h3", {}, "Files published by " + hostname),
      r.data.files.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", { class: "num" }, "Size"), el("th", {}, "SHA-256"), el("th", {}, "Source"))),
            el(
              "tbody",
              {},
              r.data.files.map((f) =>
                el("tr", {}, el("td", {}, f.fname), el("td", { class: "num" }, P2P.bytes(f.file_size)), P2P.shaCell(f.sha256), el("td", { class: "mono" }, f.ip + ":" + f.port))
              )
            )
          )
        : el("p", { class: "muted" }, "nothing published")
    );
    box.hidden = false;
  }

  async function ping(hostname) {
    P2P.flash("peer-flash", "pinging " + hostname + "…", "info");
    const r = await api("ping", { body: { hostname: hostname } });
    if (!r.ok) {
      P2P.flash("peer-flash", r.data.error, "error");
      return;
    }
    const healthy = r.data.online && r.data.results.every((x) => x.answered && x.port_open !== false);
    P2P.flash("peer-flash", r.data.text, !r.data.online ? "error" : healthy ? "ok" : "warn");
  }

  // Sessions whose Evict button was clicked once: a second click within 4 s
  // evicts.  Kept here rather than on the button, so that the question
  // survives the table being redrawn in between (it is, on every change).
  const armed = new Map();

  function evictLabel(sessionId) {
    return armed.has(sessionId) ? "Really evict?" : "Evict";
  }

  function evictButton(sessionId) {
    return document.querySelector('#peers-body tr[data-session="' + CSS.escape(sessionId) + '"] button.danger');
  }

  function relabel(sessionId) {
    const button = evictButton(sessionId);
    if (button) button.textContent = evictLabel(sessionId);
  }

  function evict(peer) {
    const sid = peer.session_id;
    if (!armed.has(sid)) {
      armed.set(
        sid,
        setTimeout(() => {
          armed.delete(sid);
          relabel(sid);
        }, 4000)
      );
      relabel(sid);
      return;
    }
    clearTimeout(armed.get(sid));
    armed.delete(sid);
    relabel(sid);
    const button = evictButton(sid);
    if (button) button.disabled = true;
    api("evict", { body: { session_id: sid } }).then((r) => {
      P2P.flash("peer-flash", r.ok ? "evicted " + r.data.hostname : r.data.error, r.ok ? "ok" : "error");
      const after = evictButton(sid);
      if (after) after.disabled = false;
    });
  }

  // -- catalogue ---------------------------------------------------------------
  const patternInput = document.getElementById("catalogue-pattern");
  let catalogueRequest = 0;

  async function loadCatalogue() {
    const mine = ++catalogueRequest;
    const pattern = patternInput.value;
    const r = await api("catalogue?pattern=" + encodeURIComponent(pattern));
    if (mine !== catalogueRequest) return;
    if (!r.ok) {
      P2P.flash("catalogue-flash", r.data.error, "error");
      return;
    }
    P2P.flash("catalogue-flash", "", "info");
    const files = r.data.files;
    if (!pattern) setText("file-count", String(files.length));
    setText("catalogue-count", files.length + (pattern ? " matching" : " distinct files"));
    P2P.fillTable(
      "catalogue-body",
      files,
      5,
      pattern ? "no file matches" : "nothing published yet",
      (f) =>
        el(
          "tr",
          { dataset: { fname: f.fname } },
          el("td", {}, el("b", {}, f.fname)),
          el("td", { class: "num" }, P2P.bytes(f.file_size)),
          P2P.shaCell(f.sha256),
          el("td", { class: "num sources" }, String(f.sources)),
          el("td", { class: "muted" }, f.hostnames.join(", "))
        )
    );
  }
  const refreshCatalogue = debounce(loadCatalogue, 200);
  patternInput.addEventListener("input", debounce(loadCatalogue, 250));

  // -- live updates ------------------------------------------------------------
  const catalogueKinds = new Set(["publish", "unpublish", "session_down", "evicted"]);
  function onEvent(e) {
    log.add(e);
    P2P.serverTime(e.time);
    if (catalogueKinds.has(e.kind) && !(e.kind === "publish" && (e.status === "unchanged" || e.status === "conflict"))) {
      refreshCatalogue();
    }
  }

  P2P.stream(
    {
      ready: (data) => {
        P2P.serverTime(data.time);
        loadStatus();
        loadPeers();
        loadCatalogue();
        if (!data.resumed) log.reload();
      },
      peers: (data) => renderPeers(data.peers),
      "*": onEvent,
    },
    P2P.streamPill
  );
})();
