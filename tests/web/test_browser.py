"""
The dashboards in headless Chromium (Playwright, sync API), against real
``twistd`` tracker and peer processes on loopback.

The tracker page must show a peer when its process starts and drop it
when the process is killed, with the catalogue, ping, discover, evict and
the event log working; the peer page must publish from the file picker,
show an ``error:`` line for a bad publish, fetch a file from another
peer with the progress reaching 100%, publish a folder from the picker and
fetch a folder whole.  Both take a screenshot; with
``P2P_SCREENSHOTS=1`` they replace ``docs/screenshots/tracker.png`` and
``peer.png`` (otherwise they stay in the test's temp dir).

Skipped when Debian's Chromium (``/usr/bin/chromium``) or Playwright is
missing, except under CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ShellProcess

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
TAC = Path(__file__).resolve().with_name("dashboard.tac")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "browser-test-token-42"
LOOPBACK = "tcp:0:interface=127.0.0.1"


def _skip_reason() -> str | None:
    if os.environ.get("CI") == "true":
        return None
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (install Debian's chromium; CI=true makes this a failure)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; CI=true makes this a failure)"
    return None


pytestmark = [
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
    pytest.mark.timeout(60),
]


def web_option_wired(role: str) -> bool:
    """
    Whether ``twistd p2ptracker``/``p2ppeer`` already take ``--web``.
    """
    if role == "tracker":
        from twistedp2p.tracker.service import Options
    else:
        from twistedp2p.peer.service import Options
    return any(spec[0] == "web" for spec in Options.optParameters)


def wait_line(proc: ShellProcess, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """
    A line matching C{pattern}, already seen or still to come.
    """
    regex = re.compile(pattern)
    for line in proc.seen:
        match = regex.search(line)
        if match:
            return match
    return proc.expect(pattern, timeout)


def api(url: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """
    Call a dashboard's JSON API from the test: C{(status, decoded body)}.
    """
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token:
        headers["X-P2P-Token"] = token
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Stack:
    """
    The twistd processes of one test, all killed (by PID) at the end.
    """

    def __init__(self, base: Path, monkeypatch: Any) -> None:
        self.base = base
        self.monkeypatch = monkeypatch
        self.procs: list[ShellProcess] = []
        self.tracker_proc: ShellProcess | None = None
        self.tracker_port: int | None = None

    def start(self, name: str, role: str, args: list[str], token: str | None = None) -> ShellProcess:
        if web_option_wired(role):
            argv = ["p2ptracker" if role == "tracker" else "p2ppeer", *args, "--web", LOOPBACK]
            if token:
                argv += ["--web-token", token]
        else:
            self.monkeypatch.setenv(
                "P2P_WEB_TAC", json.dumps({"role": role, "args": args, "web": LOOPBACK, "token": token})
            )
            argv = ["-y", str(TAC)]
        proc = ShellProcess(name, argv, cwd=self.base, logfile=Path("-"))
        self.procs.append(proc)
        return proc

    def tracker(self, token: str | None = None) -> str:
        proc = self.tracker_proc = self.start(
            "tracker", "tracker", ["--listen", LOOPBACK, "--db", "memory", "--no-shell", "--heartbeat", "2"], token
        )
        self.tracker_port = int(wait_line(proc, r"tracker \S+ listening on .*port=(\d+)").group(1))
        return wait_line(proc, r"tracker dashboard listening on (http://\S+/)").group(1)

    def peer(self, name: str, files: dict[str, bytes] = {}) -> tuple[ShellProcess, str]:
        repo = self.base / name
        for relpath, data in files.items():
            path = repo / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        proc = self.start(
            name, "peer",
            ["--repo", str(repo), "--hostname", name, "--listen", LOOPBACK, "--no-shell",
             "--tracker", f"tcp:127.0.0.1:{self.tracker_port}"],
        )
        url = wait_line(proc, r"peer dashboard listening on (http://\S+/)").group(1)
        assert self.tracker_proc is not None
        wait_line(self.tracker_proc, rf"session \S+ up: {re.escape(name)} ")
        return proc, url

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: Any):
    s = Stack(tmp_path, monkeypatch)
    yield s
    s.stop()


@pytest.fixture
def browser(tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 960},
            device_scale_factor=1,
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.problems = []
        page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))

        def console(message: Any) -> None:
            # The browser reports every 4xx answer; the tests cause those on purpose.
            if message.type == "error" and "the server responded with a status of 4" not in message.text:
                page.problems.append(f"console {message.type}: {message.text}")

        page.on("console", console)
        try:
            yield page
        finally:
            context.close()


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """
    Save a full-page screenshot (the page's own height, not the window's)
    in the test's temp dir, or in C{docs/screenshots/} when the environment
    asks for it (C{P2P_SCREENSHOTS=1}, or a directory).
    """
    wanted = os.environ.get("P2P_SCREENSHOTS")
    where = tmp_path if not wanted else SCREENSHOTS if wanted == "1" else Path(wanted)
    where.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1440, "height": 720})
    page.evaluate("window.scrollTo(0, 0); document.querySelectorAll('.scroll').forEach((e) => e.scrollTo(0, 0))")
    page.screenshot(path=str(where / name), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 960})
    assert (where / name).stat().st_size > 10_000
    return where / name


class SeedClient:
    """
    A seed-protocol tracker client over a blocking socket (what the
    original student client speaks): no version, no ids.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, payload: bytes) -> dict:
        self.sock.sendall(struct.pack("!I", len(payload)) + payload)
        head = self._read(4)
        return json.loads(self._read(struct.unpack("!I", head)[0]))

    def ask(self, message: dict) -> dict:
        return self.send(json.dumps(message).encode("utf-8"))

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the tracker closed the connection"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def test_tracker_dashboard(stack: Stack, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser
    url = stack.tracker(token=TOKEN)
    _, alpha = stack.peer("lab-pc-03", {"slides/lecture-07.pdf": os.urandom(2_400_000), "notes.txt": b"n" * 18_000})
    for lname, fname in (("slides/lecture-07.pdf", "lecture-07.pdf"), ("notes.txt", "notes.txt")):
        assert api(alpha, "api/publish", {"lname": lname, "fname": fname})[0] == 200

    # The token comes from the fragment and leaves the address bar.
    page.goto(url + "#token=" + TOKEN)
    expect(page.locator("#stream-state")).to_have_text("live")
    assert "token" not in page.url
    rows = page.locator("#peers-body tr[data-hostname]")
    expect(rows).to_have_count(1)
    expect(page.locator('#catalogue-body tr[data-fname="lecture-07.pdf"] td.sources')).to_have_text("1")

    # A peer process starts: its row appears without a reload.
    beta_proc, beta = stack.peer("lab-pc-11", {"dataset.csv": b"id,value\n" * 40_000})
    expect(page.locator('#peers-body tr[data-hostname="lab-pc-11"]')).to_have_count(1)
    assert api(beta, "api/publish", {"lname": "dataset.csv", "fname": "dataset.csv"})[0] == 200
    code, body = api(beta, "api/fetch", {"fname": "lecture-07.pdf"})
    assert code == 200, body
    expect(page.locator('#catalogue-body tr[data-fname="lecture-07.pdf"] td.sources')).to_have_text("2")
    expect(page.locator('#peers-body tr[data-hostname="lab-pc-11"] td.num').last).to_have_text("2")

    # A seed-protocol client, a conflicting publish and garbage input.
    assert stack.tracker_port is not None
    seed = SeedClient(stack.tracker_port)
    assert seed.ask({"action": "hello", "hostname": "seed-laptop", "p2p_port": 40999})["status"] == "success"
    assert seed.ask({"action": "publish", "fname": "lab-report.docx", "lname": "C:/Users/me/lab-report.docx",
                     "file_size": 48_213, "last_modified": "2025-11-20T10:00:00"})["status"] == "created"
    assert seed.ask({"action": "publish", "fname": "lab-report.docx", "lname": "C:/Users/me/lab-report.docx",
                     "file_size": 50_000, "last_modified": "2025-11-21T09:00:00"})["status"] == "conflict"
    assert seed.send(b"{not json")["code"] == "bad_json"
    expect(page.locator('#peers-body tr[data-hostname="seed-laptop"] .tag.seed')).to_have_count(1)
    expect(page.locator("#log li.kind-rejected")).to_have_count(1)
    expect(page.locator("#log li.kind-publish.status-conflict")).to_have_count(1)

    # The log filters.
    page.select_option("#log-kinds", "publish")
    expect(page.locator("#log li.kind-session_up:visible")).to_have_count(0)
    page.select_option("#log-kinds", "")
    page.fill("#log-filter", "conflict")
    expect(page.locator("#log li:visible")).to_have_count(1)
    page.fill("#log-filter", "")

    # Search, ping and discover from the page.
    page.fill("#catalogue-pattern", "*.PDF")
    expect(page.locator("#catalogue-body tr[data-fname]")).to_have_count(1)
    page.fill("#catalogue-pattern", "")
    expect(page.locator("#catalogue-body tr[data-fname]")).to_have_count(4)
    page.locator('#peers-body tr[data-hostname="lab-pc-03"] button', has_text="Ping").click()
    expect(page.locator("#peer-flash")).to_contain_text("lab-pc-03 (127.0.0.1:")
    expect(page.locator("#peer-flash")).to_contain_text("online, rtt")
    expect(page.locator("#peer-flash")).to_contain_text("p2p port open")
    page.locator('#peers-body tr[data-hostname="lab-pc-11"] button', has_text="Discover").click()
    expect(page.locator("#peer-result tbody tr")).to_have_count(2)

    screenshot(page, "tracker.png", tmp_path)

    # Evict (two clicks): the seed client leaves the table.  The question
    # survives the table being redrawn between the clicks (here: a session
    # arriving).
    evict = page.locator('#peers-body tr[data-hostname="seed-laptop"] button', has_text="Evict")
    evict.click()
    really = page.locator('#peers-body tr[data-hostname="seed-laptop"] button', has_text="Really evict?")
    expect(really).to_have_count(1)
    other = SeedClient(stack.tracker_port)
    assert other.ask({"action": "hello", "hostname": "seed-desktop", "p2p_port": 40998})["status"] == "success"
    expect(page.locator('#peers-body tr[data-hostname="seed-desktop"]')).to_have_count(1)
    really.click()
    expect(page.locator('#peers-body tr[data-hostname="seed-laptop"]')).to_have_count(0)
    expect(page.locator("#log li.kind-evicted")).to_have_count(1)
    seed.close()
    other.close()
    expect(page.locator('#peers-body tr[data-hostname="seed-desktop"]')).to_have_count(0)

    # The peer process is killed: its row goes away.
    beta_proc.kill()
    expect(page.locator('#peers-body tr[data-hostname="lab-pc-11"]')).to_have_count(0)
    expect(rows).to_have_count(1)
    expect(page.locator('#catalogue-body tr[data-fname="lecture-07.pdf"] td.sources')).to_have_text("1")
    assert page.problems == []


def test_peer_dashboard(stack: Stack, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser
    stack.tracker()
    big = os.urandom(12_000_000)
    _, alpha = stack.peer(
        "lab-pc-03",
        {"report-2025.pdf": big, "results.csv": b"x,y\n" * 5000,
         "slides/week1.pdf": b"1" * 40_000, "slides/extra/week2.pdf": b"2" * 60_000},
    )
    for name in ("report-2025.pdf", "results.csv"):
        assert api(alpha, "api/publish", {"lname": name, "fname": name})[0] == 200
    _, beta = stack.peer(
        "lab-pc-11",
        {"photos/field-trip.jpg": os.urandom(350_000), "notes-v1.txt": b"first draft\n" * 900,
         "notes-v2.txt": b"second draft\n" * 1200},
    )
    (tmp_path / "outside.txt").write_bytes(b"not shareable")

    page.goto(beta)
    expect(page.locator("#stream-state")).to_have_text("live")
    expect(page.locator("#link-state")).to_have_text("connected")
    expect(page.locator("#hostname")).to_contain_text("lab-pc-11")
    expect(page.locator("#slots-text")).to_contain_text("0 / 8 (0 of 4 up, 0 of 4 down)")

    # Publish from the picker.
    page.locator('#picker-body tr[data-lname="photos/field-trip.jpg"]').click()
    expect(page.locator("#publish-fname")).to_have_value("field-trip.jpg")
    page.click("#publish-button")
    expect(page.locator("#publish-flash")).to_have_text(re.compile(r"^published field-trip\.jpg: created"))
    expect(page.locator('#library-body tr[data-fname="field-trip.jpg"]')).to_have_count(1)
    expect(page.locator('#picker-body tr[data-lname="photos/field-trip.jpg"] .tag.ok')).to_have_text("field-trip.jpg")

    def publish(lname: str, fname: str, flash: str) -> None:
        """
        Fill in the publish form, send it, and expect the C{flash} line.
        """
        page.fill("#publish-lname", lname)
        page.fill("#publish-fname", fname)
        page.click("#publish-button")
        expect(page.locator("#publish-flash")).to_have_text(re.compile(flash))

    # A bad publish shows the shell's error line and publishes nothing.
    publish("../outside.txt", "outside.txt", r"^error: \.\./outside\.txt: resolves to .* outside")
    publish("notes-v1.txt", "../notes.txt", r"^error: '\.\./notes\.txt': a shared name")
    expect(page.locator("#library-body tr[data-fname]")).to_have_count(1)

    # Same name, other content: the page asks, then overwrites.
    publish("notes-v1.txt", "notes.txt", r"^published notes\.txt: created")
    publish("notes-v2.txt", "notes.txt", r"^error: notes\.txt is already published")
    expect(page.locator("#publish-confirm")).to_be_visible()
    page.locator("#publish-confirm button", has_text="Overwrite").click()
    expect(page.locator("#publish-flash")).to_have_text(re.compile(r"^published notes\.txt: updated"))
    expect(page.locator('#library-body tr[data-fname="notes.txt"] td.path')).to_have_text("notes-v2.txt")

    # Search the catalogue and fetch from the other peer.
    page.fill("#search-pattern", "report")
    page.click("#search-button")
    row = page.locator('#results-body tr[data-fname="report-2025.pdf"]')
    expect(row).to_have_count(1)
    row.locator("select").select_option("lab-pc-03")
    row.locator("button", has_text="Fetch").click()
    done = page.locator('#transfers-recent .transfer[data-fname="report-2025.pdf"][data-outcome="done"]')
    expect(done).to_have_count(1)
    expect(done.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(done.locator(".stats")).to_contain_text("100%")
    expect(page.locator("#search-flash")).to_contain_text("fetched report-2025.pdf (12000000 bytes) from lab-pc-03")
    expect(page.locator('#library-body tr[data-fname="report-2025.pdf"]')).to_have_count(1)
    assert (stack.base / "lab-pc-11" / "report-2025.pdf").read_bytes() == big

    # Fetching it again: the same content is already here, and the page says so.
    page.fill("#search-pattern", "")
    page.click("#search-button")
    expect(page.locator("#results-body tr[data-fname]")).to_have_count(4)
    page.locator('#results-body tr[data-fname="report-2025.pdf"] button').click()
    expect(page.locator("#search-flash")).to_contain_text("already here, same content")
    expect(page.locator("#fetch-confirm")).to_be_hidden()
    page.locator('#results-body tr[data-fname="results.csv"] button').click()
    expect(page.locator('#transfers-recent .transfer[data-fname="results.csv"][data-outcome="done"]')).to_have_count(1)
    expect(page.locator("#log li.kind-transfer_finished")).to_have_count(2)
    page.fill("#search-pattern", "")
    screenshot(page, "peer.png", tmp_path)

    # Folders: the picker lists one and publishes it as the shell's publish DIR ...
    folder = page.locator('#picker-body tr[data-folder="1"][data-lname="photos"]')
    expect(folder).to_contain_text("1 file")
    folder.click()
    expect(page.locator("#publish-fname")).to_have_value("photos")
    page.click("#publish-button")
    expect(page.locator("#publish-flash")).to_have_text("published photos: 1 file (350000 bytes)")
    expect(page.locator('#library-body tr[data-fname="photos/field-trip.jpg"]')).to_have_count(1)
    # ... and a folder listed by the tracker is fetched whole (fetch DIR/).
    assert api(alpha, "api/publish", {"lname": "slides"})[0] == 200
    page.fill("#search-pattern", "slides/")
    page.click("#search-button")
    expect(page.locator("#results-body tr[data-fname]")).to_have_count(2)
    page.locator("#fetch-folder-button", has_text="Fetch folder slides/").click()
    expect(page.locator("#search-flash")).to_have_text("fetched slides/: 2 files (100000 bytes)")
    expect(page.locator('#library-body tr[data-fname="slides/extra/week2.pdf"]')).to_have_count(1)
    assert (stack.base / "lab-pc-11" / "slides" / "extra" / "week2.pdf").read_bytes() == b"2" * 60_000
    assert page.problems == []
