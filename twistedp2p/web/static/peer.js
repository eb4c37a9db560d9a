/* The peer dashboard: library, publish, search and fetch, transfers, link. */
"use strict";

(() => {
  const { api, el, replace, setText, debounce } = P2P;
  const log = P2P.eventLog({
    choices: [
      ["link", "tracker link"],
      ["published", "published"],
      ["unpublished", "unpublished"],
      ["fetched", "fetched"],
      ["transfer_started", "transfers started"],
      ["transfer_finished", "transfers finished"],
      ["refused", "refused actions"],
    ],
  });
  let myHostname = null;
  let repo = null;
  let lastLibrary = null;

  // Paths inside the repository are shown relative to it.
  function shownPath(path) {
    return repo && path.startsWith(repo + "/") ? path.slice(repo.length + 1) : path;
  }

  // -- status: link state and the K cap ----------------------------------------
  function renderStatus(s) {
    myHostname = s.hostname;
    if (s.repo !== repo) {
      repo = s.repo;
      setText("repo", repo);
      if (lastLibrary) renderLibrary(lastLibrary);
    }
    setText("hostname", s.hostname ? "· " + s.hostname : "");
    document.title = "twistedp2p peer " + (s.hostname || "");
    setText("p2p-port", s.p2p_port ? String(s.p2p_port) : "–");
    const link = s.tracker || { state: "stopped" };
    const pill = document.getElementById("link-state");
    pill.textContent = link.state;
    pill.className = "pill link-" + link.state;
    setText("link-tracker", link.tracker || "");
    const note = document.getElementById("link-note");
    if (link.state !== "connected" && link.last_error) {
      note.textContent =
        "tracker link " + link.state + ": " + link.last_error +
        (link.retry_in !== null && link.retry_in !== undefined ? " (retrying in " + P2P.duration(link.retry_in) + ")" : "");
      note.hidden = false;
    } else {
      note.hidden = true;
    }
    renderSlots(s.sessions);
  }

  function renderSlots(k) {
    if (!k) return;
    const of = (n, limit) => (limit === undefined ? n : n + " of " + limit);
    const parts = [of(k.uploads, k.upload_limit) + " up", of(k.downloads, k.download_limit) + " down"];
    if (k.waiting) parts.push(k.waiting + " waiting");
    setText("slots-text", k.in_use + " / " + k.limit + " (" + parts.join(", ") + ")");
    const bar = document.querySelector("#slots-bar > span");
    bar.style.width = Math.min(100, (100 * k.in_use) / Math.max(1, k.limit)) + "%";
  }

  async function loadStatus() {
    const r = await api("status");
    if (r.ok) {
      P2P.serverTime(r.data.time);
      renderStatus(r.data);
    }
  }

  // -- published files ----------------------------------------------------------
  function renderLibrary(data) {
    lastLibrary = data;
    const files = data.files;
    setText("library-count", files.length ? String(files.length) : "");
    P2P.fillTable(
      "library-body",
      files,
      6,
      "nothing published yet",
      (f) =>
        el(
          "tr",
          { dataset: { fname: f.fname } },
          el("td", { class: "name" }, el("b", {}, f.fname)),
          el("td", { class: "num" }, P2P.bytes(f.size)),
          P2P.shaCell(f.sha256),
          el("td", { class: "nowrap", title: P2P.dateTime(f.mtime) }, P2P.when(f.mtime)),
          el("td", { class: "path", title: f.path }, shownPath(f.path)),
          el("td", { class: "actions" }, el("button", { type: "button", class: "danger", onclick: () => unpublish(f.fname) }, "Unpublish"))
        )
    );
  }

  async function loadLibrary() {
    const r = await api("library");
    if (r.ok) renderLibrary(r.data);
  }

  async function unpublish(fname) {
    const r = await api("unpublish", { body: { fname: fname } });
    P2P.flash("library-flash", r.ok ? r.data.text : r.data.error, r.ok ? "ok" : "error");
    if (r.ok) {
      loadLibrary();
      loadPicker();
    }
  }

  // -- the file picker and publishing ----------------------------------------------
  let pickerFiles = [];
  let pickerFolders = [];
  const pickerFilter = document.getElementById("picker-filter");
  const lnameInput = document.getElementById("publish-lname");
  const fnameInput = document.getElementById("publish-fname");

  function pick(lname, fname) {
    lnameInput.value = lname;
    fnameInput.value = fname;
    P2P.flash("publish-flash", "", "info");
    fnameInput.focus();
  }

  // A folder is published as the shell's publish DIR: every file below it.
  function folderRow(f) {
    return el(
      "tr",
      { class: "pick folder", dataset: { lname: f.lname, folder: "1" }, title: "use the folder " + f.lname, onclick: () => pick(f.lname, f.name || "") },
      el("td", { class: "mono" }, "📁 " + f.lname + "/"),
      el("td", { class: "num" }, f.files + (f.files === 1 ? " file" : " files")),
      el("td", {}, el("span", { class: "muted" }, "folder"))
    );
  }

  function renderPicker() {
    const text = pickerFilter.value.trim().toLowerCase();
    const match = (f) => !text || f.lname.toLowerCase().includes(text);
    const shown = pickerFolders.filter(match).map((f) => ({ folder: f })).concat(pickerFiles.filter(match));
    P2P.fillTable(
      "picker-body",
      shown.slice(0, 300),
      3,
      pickerFiles.length ? "no file or folder matches" : "no shareable file in the repository or share roots",
      (f) =>
        f.folder ? folderRow(f.folder) : el(
          "tr",
          {
            class: "pick",
            dataset: { lname: f.lname },
            title: "use " + f.lname,
            onclick: () => pick(f.lname, f.relpath.split("/").pop()),
          },
          el("td", { class: "mono" }, f.lname),
          el("td", { class: "num" }, P2P.bytes(f.size)),
          el("td", {}, f.published_as.length ? el("span", { class: "tag ok" }, f.published_as.join(", ")) : el("span", { class: "muted" }, "–"))
        )
    );
  }

  async function loadPicker() {
    const r = await api("files");
    if (!r.ok) {
      replace("picker-body", el("tr", {}, el("td", { class: "empty", colspan: 3 }, r.data.error)));
      return;
    }
    pickerFiles = r.data.files;
    pickerFolders = r.data.folders || [];
    renderPicker();
  }
  pickerFilter.addEventListener("input", debounce(renderPicker, 100));
  document.getElementById("picker-reload").addEventListener("click", loadPicker);

  function askToConfirm(boxId, text, action) {
    const box = document.getElementById(boxId);
    replace(
      box,
      el("span", { class: "text" }, text),
      el("button", { type: "button", class: "primary", onclick: () => { box.hidden = true; action(); } }, "Overwrite"),
      el("button", { type: "button", onclick: () => { box.hidden = true; } }, "Cancel")
    );
    box.hidden = false;
  }

  async function publish(force) {
    const lname = lnameInput.value.trim();
    // Empty: shared under its path's name (a file or a folder), as the shell's publish PATH.
    const fname = fnameInput.value.trim() || null;
    document.getElementById("publish-confirm").hidden = true;
    P2P.flash("publish-flash", "publishing " + (fname || lname) + "… (hashing)", "info");
    const r = await api("publish", { body: { lname: lname, fname: fname, force: !!force } });
    if (r.ok) {
      const failed = (r.data.failed || []).map((f) => f[0] + ": " + f[1]);
      (r.data.items || []).forEach((item) => { if (item.error) failed.push(item.error); });
      P2P.flash("publish-flash", r.data.text + (failed.length ? " — " + failed.join("; ") : ""), failed.length ? "warn" : "ok");
      loadLibrary();
      loadPicker();
      return;
    }
    P2P.flash("publish-flash", r.data.error, r.data.conflict ? "warn" : "error");
    if (r.data.conflict && !force) {
      askToConfirm("publish-confirm", "Replace the published file with this one?", () => publish(true));
    }
  }
  document.getElementById("publish-button").addEventListener("click", () => publish(false));
  fnameInput.addEventListener("keydown", (e) => { if (e.key === "Enter") publish(false); });

  // -- search and fetch --------------------------------------------------------------
  const patternInput = document.getElementById("search-pattern");
  const folderButton = document.getElementById("fetch-folder-button");
  folderButton.addEventListener("click", () => fetchFile(folderButton.dataset.folder, "", false, folderButton));

  async function search() {
    const pattern = patternInput.value;
    const r = await api("search?pattern=" + encodeURIComponent(pattern));
    if (!r.ok) {
      P2P.flash("search-flash", r.data.error, "error");
      return;
    }
    const files = r.data.files;
    P2P.flash("search-flash", files.length + " file(s) " + (pattern ? (pattern.endsWith("/") ? "in the folder " : "match ") + pattern : "in the catalogue"), "info");
    // A pattern ending with / lists a folder: it can be fetched whole (fetch DIR/).
    folderButton.hidden = !(pattern.endsWith("/") && files.length);
    folderButton.textContent = "Fetch folder " + pattern;
    folderButton.dataset.folder = pattern;
    P2P.fillTable(
      "results-body",
      files,
      6,
      "no file matches",
      (f) => {
        const choice = el(
          "select",
          { "aria-label": "source for " + f.fname },
          el("option", { value: "" }, "any source"),
          f.hostnames.map((h) => el("option", { value: h }, h + (h === myHostname ? " (this peer)" : "")))
        );
        const button = el(
          "button",
          { type: "button", class: f.local ? "" : "primary", onclick: () => fetchFile(f.fname, choice.value, false, button) },
          f.local ? "Fetch again" : "Fetch"
        );
        return el(
          "tr",
          { dataset: { fname: f.fname } },
          el("td", { class: "name" }, el("b", {}, f.fname), " ", f.local ? el("span", { class: "tag ok" }, "shared here") : null),
          el("td", { class: "num" }, P2P.bytes(f.file_size)),
          P2P.shaCell(f.sha256),
          el("td", { class: "num" }, String(f.sources)),
          el("td", {}, choice),
          el("td", { class: "actions" }, button)
        );
      }
    );
  }
  document.getElementById("search-button").addEventListener("click", search);
  patternInput.addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });

  async function fetchFile(fname, source, force, button) {
    document.getElementById("fetch-confirm").hidden = true;
    if (button) button.disabled = true;
    P2P.flash("search-flash", "fetching " + fname + (source ? " from " + source : "") + "…", "info");
    const r = await api("fetch", { body: { fname: fname, source: source || null, force: !!force } });
    if (button) button.disabled = false;
    if (r.ok) {
      const failed = (r.data.failed || []).map((f) => f[0] + ": " + f[1]);
      P2P.flash("search-flash", r.data.text + (failed.length ? " — " + failed.join("; ") : ""), failed.length ? "warn" : "ok");
      loadLibrary();
      return;
    }
    if (r.data.same || r.data.stopped) {
      // Already here with the same content, or paused/cancelled: nothing to confirm.
      P2P.flash("search-flash", r.data.error.replace(/^error: /, ""), "info");
      return;
    }
    P2P.flash("search-flash", r.data.error, r.data.exists || r.data.conflict ? "warn" : "error");
    if ((r.data.exists || r.data.conflict) && !force) {
      askToConfirm("fetch-confirm", "Overwrite the local " + fname + " with the downloaded file?", () => fetchFile(fname, source, true, button));
    }
  }

  // -- transfers -------------------------------------------------------------------
  async function transferAction(action, fname, button) {
    if (button) button.disabled = true;
    const r = await api(action, { body: { fname: fname } });
    if (button) button.disabled = false;
    P2P.flash("transfers-flash", r.ok ? r.data.text : r.data.error, r.ok ? "ok" : "error");
    loadTransfers();
    if (action === "resume" && r.ok) loadLibrary();
  }

  function actionButton(action, label, fname) {
    const button = el("button", { type: "button", class: "small", dataset: { action: action } }, label);
    button.addEventListener("click", () => transferAction(action, fname, button));
    return button;
  }

  function pausedRow(p) {
    const kept = p.pieces === null || p.pieces === undefined ? "nothing kept" : p.kept + " of " + p.pieces + " pieces kept";
    return el(
      "div",
      { class: "transfer paused", dataset: { fname: p.fname, direction: "down", outcome: "paused" } },
      el("span", { class: "dir down", title: "paused download" }, "⏸"),
      el("div", {}, el("div", { class: "name" }, p.fname), el("div", { class: "peer" }, "paused")),
      el("div", { class: "stats" }, kept),
      el("div", { class: "actions" }, actionButton("resume", "Resume", p.fname), actionButton("cancel", "Cancel", p.fname))
    );
  }

  function transferRow(t, finished) {
    const pct = t.percent === null || t.percent === undefined ? null : t.percent;
    const state = finished ? (t.outcome === "done" ? "done" : "failed") : pct === null ? "indeterminate" : "";
    const fill = el("span", {});
    fill.style.width = (finished && t.outcome === "done" ? 100 : pct === null ? 35 : pct) + "%";
    const stats = finished
      ? (t.outcome === "done" ? "100% · " : "") + P2P.bytes(t.done) + " · " + (t.outcome === "done" ? "done " + P2P.clock(t.finished) : t.outcome)
      : (pct === null ? "" : pct.toFixed(1) + "% · ") + P2P.bytes(t.done) + " / " + P2P.bytes(t.total) + " · " + P2P.rate(t.rate) + " · ETA " + P2P.duration(t.eta);
    return el(
      "div",
      { class: "transfer" + (finished ? " finished" : " active"), dataset: { fname: t.fname, direction: t.direction, outcome: t.outcome || "" } },
      el("span", { class: "dir " + t.direction, title: t.direction === "up" ? "upload" : "download" }, t.direction === "up" ? "↑" : "↓"),
      el("div", {}, el("div", { class: "name" }, t.fname), el("div", { class: "peer" }, (t.direction === "up" ? "to " : "from ") + t.peer)),
      el("div", { class: "stats" }, stats),
      el("div", { class: "bar " + state, role: "progressbar", "aria-valuenow": finished && t.outcome === "done" ? 100 : pct === null ? "" : Math.round(pct), "aria-valuemin": 0, "aria-valuemax": 100 }, fill),
      !finished && t.direction === "down"
        ? el("div", { class: "actions" }, actionButton("pause", "Pause", t.fname), actionButton("cancel", "Cancel", t.fname))
        : null
    );
  }

  function renderTransfers(data) {
    const active = data.active || [];
    const paused = data.paused || [];
    setText("transfers-count", (active.length ? active.length + " in progress" : "") + (paused.length ? (active.length ? ", " : "") + paused.length + " paused" : ""));
    const rows = active.map((t) => transferRow(t, false)).concat(paused.map(pausedRow));
    replace("transfers-active", rows.length ? rows : el("p", { class: "muted" }, "no transfer in progress"));
    const recent = (data.recent || []).slice(0, 6);
    replace("transfers-recent", recent.length ? [el("h3", { class: "muted" }, "Recently finished")].concat(recent.map((t) => transferRow(t, true))) : []);
    renderSlots(data.sessions);
  }

  async function loadTransfers() {
    const r = await api("transfers");
    if (r.ok) renderTransfers(r.data);
  }

  // -- live updates --------------------------------------------------------------------
  P2P.stream(
    {
      ready: (data) => {
        P2P.serverTime(data.time);
        loadStatus();
        loadLibrary();
        loadTransfers();
        loadPicker();
        if (!data.resumed) log.reload();
      },
      status: renderStatus,
      library: renderLibrary,
      transfers: renderTransfers,
      "*": (e) => {
        P2P.serverTime(e.time);
        log.add(e);
      },
    },
    P2P.streamPill
  );
})();
