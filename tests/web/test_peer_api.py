"""
The peer dashboard's API against real peers and a real tracker
(in-process, real reactor, loopback): the file picker, publish and
unpublish (conflicts, bad input), search, fetch between two peers, the
event stream, tokens and /metrics.
"""

from __future__ import annotations

import hashlib
import os

from twisted.trial import unittest

from .helpers import Client, EventStream, Services, coroutine
from .test_tracker_api import samples

TOKEN = "peer-token-0123456789"
DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class PeerApiTests(unittest.TestCase):
    timeout = 45

    def setUp(self) -> None:
        self.services = Services(self)

    async def peer(self, name: str = "alpha", token: str | None = None):
        if self.services.tracker is None:
            await self.services.start_tracker()
        peer, web = await self.services.start_peer(name, token)
        return peer, web, Client(self, web.url, token)

    @coroutine
    async def test_page(self) -> None:
        _, _, client = await self.peer()
        code, body, _ = await client.request("GET", "")
        self.assertEqual(code, 200)
        self.assertIn(b"/static/peer.js", body)
        code, body = await client.get("static/peer.js")
        self.assertEqual(code, 200)
        code, _, _ = await client.request("GET", "nothing")
        self.assertEqual(code, 404)

    @coroutine
    async def test_file_picker_lists_only_shareable_files(self) -> None:
        share = self.services.base / "share"
        (share / "sub").mkdir(parents=True)
        (share / "sub" / "s.txt").write_bytes(b"s")
        (share / ".secret").mkdir()
        (share / ".secret" / "k").write_bytes(b"k")
        if self.services.tracker is None:
            await self.services.start_tracker()
        peer, web = await self.services.start_peer("alpha", None, True, "--share-root", str(share))
        client = Client(self, web.url)
        repo = peer.library.repo
        (repo / "docs").mkdir()
        (repo / "docs" / "a.txt").write_bytes(b"a")
        (repo / ".p2p").mkdir(exist_ok=True)
        (repo / ".p2p" / "x").write_bytes(b"x")
        (repo / ".f.part").write_bytes(b"p")
        outside = self.services.base / "outside.txt"
        outside.write_bytes(b"o")
        os.symlink(outside, repo / "link-out.txt")
        os.mkfifo(repo / "fifo")
        code, body = await client.get("api/files")
        self.assertEqual(code, 200)
        names = sorted(f["lname"] for f in body["files"])
        self.assertEqual(names, sorted(["docs/a.txt", str(share / "sub" / "s.txt")]))
        self.assertFalse(body["truncated"])
        [a] = [f for f in body["files"] if f["lname"] == "docs/a.txt"]
        self.assertEqual((a["size"], a["relpath"], a["published_as"]), (1, "docs/a.txt", []))
        # The folders that hold them (a share root too; no hidden one), with
        # the name publish gives each.
        folders = sorted((f["lname"], f["relpath"], f["name"], f["files"]) for f in body["folders"])
        self.assertEqual(
            folders,
            sorted([("docs", "docs", "docs", 1), (str(share), ".", "share", 1), (str(share / "sub"), "sub", "sub", 1)]),
        )

    @coroutine
    async def test_publish_and_fetch_a_folder(self) -> None:
        alpha, _, alpha_client = await self.peer("alpha")
        beta, _, beta_client = await self.peer("beta")
        album = alpha.library.repo / "album"
        (album / "sub").mkdir(parents=True)
        (album / "a.bin").write_bytes(DATA)
        (album / "sub" / "b.bin").write_bytes(b"b" * 1000)
        (album / ".hidden").write_bytes(b"h")
        # The folder the picker lists, as publish DIR in the shell.
        code, body = await alpha_client.post("api/publish", {"lname": "album"})
        self.assertEqual(code, 200, body)
        self.assertEqual((body["folder"], body["size"], body["failed"]), ("album", len(DATA) + 1000, []))
        self.assertEqual([(f["fname"], f["status"]) for f in body["files"]],
                         [("album/a.bin", "created"), ("album/sub/b.bin", "created")])
        self.assertEqual(body["text"], f"published album: 2 files ({len(DATA) + 1000} bytes)")
        # Under another prefix.
        code, body = await alpha_client.post("api/publish", {"lname": "album", "fname": "music"})
        self.assertEqual((code, body["folder"], len(body["files"])), (200, "music", 2))

        # fetch DIR/, as in the shell: every file below it, verified.
        code, body = await beta_client.post("api/fetch", {"fname": "album/"})
        self.assertEqual(code, 200, body)
        self.assertEqual((body["folder"], body["size"], body["verified"], body["present"], body["failed"]),
                         ("album/", len(DATA) + 1000, True, [], []))
        self.assertEqual([(f["fname"], f["source"], f["verified"]) for f in body["fetched"]],
                         [("album/a.bin", "alpha", True), ("album/sub/b.bin", "alpha", True)])
        self.assertEqual((beta.library.repo / "album" / "a.bin").read_bytes(), DATA)
        self.assertEqual((beta.library.repo / "album" / "sub" / "b.bin").read_bytes(), b"b" * 1000)
        # Again: already here.
        code, body = await beta_client.post("api/fetch", {"fname": "album/"})
        self.assertEqual((code, body["fetched"], body["present"]), (200, [], ["album/a.bin", "album/sub/b.bin"]))
        self.assertEqual(body["text"], "fetched album/: 0 files (0 bytes), 2 already here")
        # Nothing listed there; a bad folder name.
        code, body = await beta_client.post("api/fetch", {"fname": "nothing/"})
        self.assertEqual(code, 404, body)
        code, body = await beta_client.post("api/fetch", {"fname": "../"})
        self.assertEqual(code, 400, body)

    @coroutine
    async def test_publish_conflict_force_unpublish(self) -> None:
        peer, web, client = await self.peer()
        repo = peer.library.repo
        (repo / "one.bin").write_bytes(b"1" * 10)
        (repo / "two.bin").write_bytes(b"2" * 20)
        code, body = await client.post("api/publish", {"lname": "one.bin", "fname": "shared.bin"})
        self.assertEqual((code, body["status"], body["size"]), (200, "created", 10))
        code, body = await client.get("api/library")
        self.assertEqual([(f["fname"], f["size"]) for f in body["files"]], [("shared.bin", 10)])
        code, body = await client.get("api/files")
        self.assertEqual([f["published_as"] for f in body["files"] if f["lname"] == "one.bin"], [["shared.bin"]])
        # Different content under the same name: a conflict the page asks about ...
        code, body = await client.post("api/publish", {"lname": "two.bin", "fname": "shared.bin"})
        self.assertEqual(code, 409)
        self.assertTrue(body["conflict"])
        self.assertTrue(body["error"].startswith("error: shared.bin is already published"))
        self.assertEqual(peer.library.get("shared.bin").size, 10)
        # ... and retries with force.
        code, body = await client.post("api/publish", {"lname": "two.bin", "fname": "shared.bin", "force": True})
        self.assertEqual((code, body["status"], body["size"]), (200, "updated", 20))
        code, body = await client.post("api/unpublish", {"fname": "shared.bin"})
        self.assertEqual((code, body["tracker_told"]), (200, True))
        code, body = await client.post("api/unpublish", {"fname": "shared.bin"})
        self.assertEqual((code, body["error"]), (404, "error: shared.bin is not published here"))

    @coroutine
    async def test_bad_publish_is_4xx_with_the_shell_message(self) -> None:
        peer, web, client = await self.peer()
        (peer.library.repo / "ok.txt").write_bytes(b"ok")
        outside = self.services.base / "outside.txt"
        outside.write_bytes(b"o")
        cases = [
            ({"lname": "missing.txt", "fname": "m"}, "error: missing.txt: no such file"),
            ({"lname": str(outside), "fname": "o"}, f"error: {outside}: resolves to"),
            ({"lname": "ok.txt", "fname": "../x"}, "error: '../x': a shared name must not contain"),
            ({"lname": "ok.txt", "fname": ".hidden"}, "error: '.hidden': a shared name must not start with '.'"),
            ({"lname": "ok.txt", "fname": ""}, "error: 'fname' must not be empty"),
            ({"fname": "x"}, "error: 'lname' is required"),
            ({"lname": "ok.txt", "fname": "x", "force": "yes"}, "error: 'force' must be true or false"),
            ({"lname": 3, "fname": "x"}, "error: 'lname' must be a string"),
        ]
        for body, message in cases:
            code, answer = await client.post("api/publish", body)
            self.assertEqual(code, 400, body)
            self.assertTrue(answer["error"].startswith(message), (body, answer))
        self.assertEqual(len(peer.library), 0)
        code, answer = await client.post("api/unpublish", {"fname": "a\\b"})
        self.assertEqual(code, 400)
        self.assertIn("a shared name must not contain '\\'", answer["error"])
        code, answer = await client.get("api/search?pattern=" + "x" * 300)
        self.assertEqual(code, 400)
        code, answer = await client.post("api/fetch", {"fname": "x", "source": "a\tb"})
        self.assertEqual((code, answer["error"]), (400, "error: source contains control characters"))

    @coroutine
    async def test_search_and_fetch_between_peers(self) -> None:
        alpha, _, alpha_client = await self.peer("alpha")
        beta, beta_web, beta_client = await self.peer("beta")
        (alpha.library.repo / "report.bin").write_bytes(DATA)
        code, body = await alpha_client.post("api/publish", {"lname": "report.bin", "fname": "report.bin"})
        self.assertEqual(code, 200)
        stream = await EventStream.open(self, beta_client)
        await stream.wait_for("ready")

        code, body = await beta_client.get("api/search?pattern=report")
        self.assertEqual(code, 200)
        [entry] = body["files"]
        self.assertEqual((entry["fname"], entry["sha256"], entry["sources"], entry["local"], entry["others"]),
                         ("report.bin", SHA, 1, False, ["alpha"]))

        code, body = await beta_client.post("api/fetch", {"fname": "report.bin", "source": "alpha"})
        self.assertEqual(code, 200, body)
        self.assertEqual((body["size"], body["sha256"], body["verified"], body["source"]),
                         (len(DATA), SHA, True, "alpha"))
        self.assertEqual((beta.library.repo / "report.bin").read_bytes(), DATA)
        _, started = await stream.wait_for("transfer_started")
        self.assertEqual((started["transfer"]["direction"], started["transfer"]["fname"]), ("down", "report.bin"))
        _, finished = await stream.wait_for("transfer_finished")
        self.assertEqual((finished["level"], finished["outcome"], finished["transfer"]["done"]),
                         ("ok", "done", len(DATA)))
        await stream.wait_for("fetched")
        await stream.wait_for("transfers", lambda d: d["recent"] and d["recent"][0]["outcome"] == "done")

        code, body = await beta_client.get("api/transfers")
        [recent] = body["recent"]
        self.assertEqual((recent["percent"], recent["outcome"], recent["peer"].split()[0]), (100.0, "done", "alpha"))
        self.assertEqual(body["active"], [])
        self.assertEqual(body["sessions"]["limit"], 8)

        self.assertEqual(body["paused"], [])

        # Again: the same content is already here; the page says so.
        code, body = await beta_client.post("api/fetch", {"fname": "report.bin"})
        self.assertEqual(code, 409)
        self.assertTrue(body["exists"])
        self.assertTrue(body["same"])
        self.assertIn("already here, same content", body["error"])
        # Nothing being fetched: nothing to pause or cancel.
        code, body = await beta_client.post("api/pause", {"fname": "report.bin"})
        self.assertEqual((code, body["error"]), (404, "error: report.bin is not being fetched"))
        code, body = await beta_client.post("api/cancel", {"fname": "report.bin"})
        self.assertEqual(code, 404)
        (beta.library.repo / "report.bin").write_bytes(b"changed")
        code, body = await beta_client.post("api/fetch", {"fname": "report.bin"})
        self.assertEqual(code, 409)
        self.assertTrue(body["exists"])
        self.assertNotIn("same", body)
        self.assertTrue(body["error"].startswith("error: "))
        code, body = await beta_client.post("api/fetch", {"fname": "report.bin", "force": True})
        self.assertEqual((code, body["replaced"]), (200, True))
        code, body = await beta_client.post("api/fetch", {"fname": "nothing.bin"})
        self.assertEqual((code, body["error"]), (404, "error: no live source has nothing.bin"))
        _, refused = await stream.wait_for("refused")
        self.assertEqual(refused["level"], "warn")

        # Both sides count the bytes.
        down = samples((await beta_client.get("metrics"))[1])
        up = samples((await alpha_client.get("metrics"))[1])
        self.assertEqual(down[("p2p_peer_bytes_total", (("direction", "down"),))], 2 * len(DATA))
        self.assertEqual(down[("p2p_peer_transfers_total", (("direction", "down"), ("outcome", "done")))], 2.0)
        self.assertEqual(up[("p2p_peer_bytes_total", (("direction", "up"),))], 2 * len(DATA))
        self.assertEqual(down[("p2p_peer_published_files", ())], 1.0)
        self.assertEqual(down[("p2p_peer_session_slots", (("state", "limit"),))], 8.0)
        self.assertEqual(down[("p2p_peer_tracker_connected", ())], 1.0)
        self.assertEqual(down[("p2p_peer_verification_failures_total", ())], 0.0)

    @coroutine
    async def test_status_and_token(self) -> None:
        peer, web, client = await self.peer("alpha", TOKEN)
        code, body = await client.get("api/status", token=False)
        self.assertEqual(code, 401)
        code, body = await client.post("api/publish", {"lname": "x", "fname": "x"}, token=False)
        self.assertEqual(code, 401)
        code, body = await client.get("api/status")
        self.assertEqual(code, 200)
        self.assertEqual((body["hostname"], body["p2p_port"], body["tracker"]["state"], body["sessions"]["limit"]),
                         ("alpha", peer.node.p2p_port, "connected", 8))
        code, body = await client.get("api/status", token=False, headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(code, 200)
