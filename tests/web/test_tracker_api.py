"""
The tracker dashboard's API against a real tracker (in-process, real
reactor, loopback): listings, ping/evict, bad input, tokens, POST-only
state changes, the event stream and /metrics.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from .helpers import Client, EventStream, Services, coroutine, until

TOKEN = "test-token-0123456789"


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """
    Parse Prometheus text into {(sample name, sorted labels): value}.
    """
    out = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class TrackerApiTests(unittest.TestCase):
    timeout = 45

    def setUp(self) -> None:
        self.services = Services(self)

    async def tracker(self, token: str | None = None) -> Client:
        self.tracker_service, self.web = await self.services.start_tracker(token)
        return Client(self, self.web.url, token)

    @coroutine
    async def test_page_and_static_files(self) -> None:
        client = await self.tracker()
        code, body, response = await client.request("GET", "")
        self.assertEqual(code, 200)
        self.assertIn(b"twistedp2p", body)
        self.assertIn(b"/static/tracker.js", body)
        self.assertIn("script-src 'self'", response.headers.getRawHeaders("content-security-policy")[0])
        for name in ("app.css", "common.js", "tracker.js"):
            code, body = await client.get("static/" + name)
            self.assertEqual(code, 200, name)
            self.assertTrue(body)
        code, _ = await client.get("static/nothing.js")
        self.assertEqual(code, 404)
        # Fragments of the pages are not served on their own.
        code, _ = await client.get("static/_log.html")
        self.assertEqual(code, 404)
        code, _ = await client.get("static/")
        self.assertEqual(code, 404)

    @coroutine
    async def test_catalogue_lists_a_folder(self) -> None:
        client = await self.tracker()
        peer, _ = await self.services.start_peer("alpha", web=False)
        (peer.library.repo / "docs" / "sub").mkdir(parents=True)
        (peer.library.repo / "docs" / "sub" / "a b.txt").write_bytes(b"a")
        (peer.library.repo / "docs" / "c.txt").write_bytes(b"c")
        await peer.node.publish_any("docs")
        code, body = await client.get("api/catalogue?pattern=docs/sub/")
        self.assertEqual((code, [f["fname"] for f in body["files"]]), (200, ["docs/sub/a b.txt"]))
        code, body = await client.get("api/catalogue?pattern=docs/")
        self.assertEqual([f["fname"] for f in body["files"]], ["docs/c.txt", "docs/sub/a b.txt"])

    @coroutine
    async def test_listings_follow_peers(self) -> None:
        client = await self.tracker()
        code, body = await client.get("api/peers")
        self.assertEqual((code, body["peers"]), (200, []))
        peer, _ = await self.services.start_peer("alpha", web=False)
        (peer.library.repo / "notes.pdf").write_bytes(b"x" * 1000)
        await peer.node.publish("notes.pdf", "notes.pdf")
        code, body = await client.get("api/peers")
        [row] = body["peers"]
        self.assertEqual(
            (row["hostname"], row["ip"], row["p2p_port"], row["version"], row["seed"], row["files"]),
            ("alpha", "127.0.0.1", peer.node.p2p_port, 1, False, 1),
        )
        code, body = await client.get("api/catalogue?pattern=*.PDF")
        self.assertEqual(code, 200)
        self.assertEqual([(f["fname"], f["sources"], f["hostnames"]) for f in body["files"]],
                         [("notes.pdf", 1, ["alpha"])])
        code, body = await client.get("api/catalogue?pattern=zzz")
        self.assertEqual(body["files"], [])
        code, body = await client.get("api/discover?hostname=alpha")
        self.assertEqual(code, 200)
        self.assertTrue(body["online"])
        self.assertEqual([f["fname"] for f in body["files"]], ["notes.pdf"])
        code, body = await client.get("api/status")
        self.assertEqual((body["role"], body["sessions"]), ("tracker", 1))

    @coroutine
    async def test_ping_and_evict(self) -> None:
        client = await self.tracker()
        peer, _ = await self.services.start_peer("alpha", web=False)
        code, body = await client.post("api/ping", {"hostname": "alpha"})
        self.assertEqual(code, 200)
        [result] = body["results"]
        self.assertTrue(result["answered"])
        self.assertTrue(result["port_open"])
        self.assertIsInstance(result["rtt"], float)
        self.assertIn("online, rtt", body["text"])
        code, body = await client.post("api/ping", {"hostname": "nobody"})
        self.assertEqual((code, body["online"], body["text"]), (200, False, "nobody: offline"))

        [row] = (await client.get("api/peers"))[1]["peers"]
        code, body = await client.post("api/evict", {"session_id": row["session_id"], "reason": "testing"})
        self.assertEqual((code, body["hostname"]), (200, "alpha"))
        self.assertNotIn(row["session_id"], [p.session.session_id for p in self.tracker_service.registry.peers()])
        code, body = await client.post("api/evict", {"session_id": row["session_id"]})
        self.assertEqual(code, 404)
        self.assertTrue(body["error"].startswith("error: no live session"))

    @coroutine
    async def test_bad_input_is_4xx_with_error_line(self) -> None:
        client = await self.tracker()
        cases = [
            ("GET", "api/catalogue?limit=abc", None, 400, "error: limit must be an integer"),
            ("GET", "api/catalogue?limit=0", None, 400, "error: limit must be between 1"),
            ("GET", "api/catalogue?pattern=" + "x" * 300, None, 400, "error: pattern is longer than 255"),
            ("GET", "api/catalogue?pattern=%ff", None, 400, "error: query parameter pattern is not valid UTF-8"),
            ("GET", "api/discover", None, 400, "error: a hostname is required"),
            ("GET", "api/discover?hostname=a%01b", None, 400, "error: hostname contains control characters"),
            ("POST", "api/ping", {"hostname": 7}, 400, "error: hostname must be a string"),
            ("POST", "api/evict", {}, 400, "error: 'session_id' is required"),
            ("POST", "api/evict", {"session_id": "x", "reason": "a\nb"}, 400, "error: reason contains control"),
            ("GET", "api/nothing", None, 404, "error: no such API endpoint: /api/nothing"),
        ]
        for method, path, body, status, message in cases:
            code, answer, _ = await client.request(method, path, body)
            self.assertEqual(code, status, path)
            self.assertTrue(answer["error"].startswith(message), (path, answer))
        code, answer, _ = await client.request("POST", "api/ping", raw=b"{not json",
                                               headers={"Content-Type": "application/json"})
        self.assertEqual((code, answer["error"]), (400, "error: the POST body is not valid JSON"))
        code, answer, _ = await client.request("POST", "api/ping", raw=b"[1]",
                                               headers={"Content-Type": "application/json"})
        self.assertEqual((code, answer["error"]), (400, "error: the POST body must be a JSON object"))
        code, answer, _ = await client.request("POST", "api/ping", raw=b"x" * 70000,
                                               headers={"Content-Type": "application/json"})
        self.assertEqual(code, 413)

    @coroutine
    async def test_state_changes_need_post_with_json(self) -> None:
        client = await self.tracker()
        for path in ("api/ping?hostname=a", "api/evict?session_id=x"):
            code, body, response = await client.request("GET", path)
            self.assertEqual(code, 405, path)
            self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
            self.assertIn("need POST", body["error"])
        code, body = await client.post("api/peers")
        self.assertEqual(code, 405)
        # A form post (no preflight cross-origin) is refused.
        code, body, _ = await client.request("POST", "api/ping", raw=b"hostname=a",
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(code, 415)
        # Without a token: a POST from another origin, or a request
        # addressed to another host name (DNS rebinding), is refused.
        code, body, _ = await client.request("POST", "api/ping", {"hostname": "a"},
                                             headers={"Origin": "http://evil.example"})
        self.assertEqual((code, body["error"]), (403, "error: cross-origin request refused"))
        code, body, _ = await client.request("GET", "api/peers", headers={"Host": "evil.example:80"})
        self.assertEqual(code, 403)
        port = self.web.port.getHost().port
        code, body, _ = await client.request("POST", "api/ping", {"hostname": "a"},
                                             headers={"Origin": f"http://127.0.0.1:{port}"})
        self.assertEqual(code, 200)

    @coroutine
    async def test_token_required_when_configured(self) -> None:
        client = await self.tracker(TOKEN)
        for path in ("api/peers", "api/status", "metrics", "api/events"):
            code, body, response = await client.request("GET", path, token=False)
            self.assertEqual(code, 401, path)
            self.assertIn("web token", body["error"])
            self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="twistedp2p"'])
        code, _ = await client.get("api/peers", token=False, headers={"X-P2P-Token": TOKEN + "x"})
        self.assertEqual(code, 401)
        code, _ = await client.get("api/peers", token=False, headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(code, 200)
        code, _ = await client.get("api/peers")
        self.assertEqual(code, 200)
        code, _ = await client.post("api/ping", {"hostname": "a"}, token=False)
        self.assertEqual(code, 401)
        code, _ = await client.post("api/ping", {"hostname": "a"})
        self.assertEqual(code, 200)
        # The page itself carries no data and loads without the token.
        code, _, _ = await client.request("GET", "", token=False)
        self.assertEqual(code, 200)

    @coroutine
    async def test_event_stream_delivers_registration(self) -> None:
        client = await self.tracker()
        stream = await EventStream.open(self, client)
        self.assertEqual(stream.response.code, 200)
        self.assertEqual(stream.response.headers.getRawHeaders("content-type"), ["text/event-stream; charset=utf-8"])
        await stream.wait_for("ready")
        self.assertEqual(self.web.hub.clients, 1)
        peer, _ = await self.services.start_peer("alpha", web=False)
        kind, event = await stream.wait_for("session_up", lambda e: e["hostname"] == "alpha")
        self.assertEqual((event["level"], event["p2p_port"], event["seed"]), ("ok", peer.node.p2p_port, False))
        self.assertIn("alpha up from 127.0.0.1", event["text"])
        kind, snapshot = await stream.wait_for("peers", lambda d: [p["hostname"] for p in d["peers"]] == ["alpha"])
        # A bad request from the peer side shows up as "rejected".
        await peer.link.protocol.request("publish", fname="../x").addErrback(lambda f: None)
        kind, event = await stream.wait_for("rejected")
        self.assertEqual((event["code"], event["level"]), ("bad_field", "error"))
        await peer.stopService()
        kind, event = await stream.wait_for("session_down", lambda e: e["hostname"] == "alpha")
        # The log keeps the events for pages that connect later.
        code, body = await client.get("api/log")
        kinds = [e["kind"] for e in body["events"]]
        self.assertIn("session_up", kinds)
        self.assertIn("session_down", kinds)
        # Disconnecting the stream removes it from the hub.
        await stream.close()
        await until(lambda: self.web.hub.clients == 0)

    @coroutine
    async def test_event_stream_resumes_with_last_event_id(self) -> None:
        client = await self.tracker()
        hub = self.web.hub
        first = hub.publish("notice", "info", "one")
        hub.publish("notice", "info", "two")
        stream = await EventStream.open(self, client, headers={"Last-Event-ID": str(first["id"])})
        kind, ready = await stream.wait_for("ready")
        self.assertTrue(ready["resumed"])
        self.assertEqual([d["text"] for k, d in stream.events if k == "notice"], ["two"])

    @coroutine
    async def test_metrics(self) -> None:
        client = await self.tracker()
        peer, _ = await self.services.start_peer("alpha", web=False)
        (peer.library.repo / "a.txt").write_bytes(b"a")
        await peer.node.publish("a.txt", "a.txt")
        await peer.node.publish("a.txt", "a.txt")
        await peer.link.protocol.request("fetch", fname="a.txt")
        await peer.link.protocol.request("publish", fname="").addErrback(lambda f: None)
        code, body, response = await client.request("GET", "metrics")
        self.assertEqual(code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        values = samples(body)
        self.assertEqual(values[("p2p_tracker_sessions", (("kind", "native"),))], 1.0)
        self.assertEqual(values[("p2p_tracker_publishes_total", (("status", "created"),))], 1.0)
        self.assertEqual(values[("p2p_tracker_publishes_total", (("status", "unchanged"),))], 1.0)
        self.assertEqual(values[("p2p_tracker_fetch_lookups_total", (("result", "empty"),))], 1.0)
        self.assertEqual(values[("p2p_tracker_rejected_total", (("code", "bad_field"),))], 1.0)
        self.assertEqual(values[("p2p_tracker_evictions_total", ())], 0.0)
        self.assertIn(("p2p_tracker_fetch_latency_seconds_count", ()), values)
        self.assertEqual(values[("p2p_tracker_publications", ())], 1.0)

    @coroutine
    async def test_two_trackers_in_one_process_have_separate_metrics(self) -> None:
        client = await self.tracker()
        other = Services(self)
        _, other_web = await other.start_tracker()
        other_client = Client(self, other_web.url)
        await self.services.start_peer("alpha", web=False)
        mine = samples((await client.get("metrics"))[1])
        theirs = samples((await other_client.get("metrics"))[1])
        self.assertEqual(mine[("p2p_tracker_sessions_opened_total", ())], 1.0)
        self.assertEqual(theirs[("p2p_tracker_sessions_opened_total", ())], 0.0)


class StopTests(unittest.TestCase):
    timeout = 30

    @coroutine
    async def test_stopping_closes_streams_and_port(self) -> None:
        services = Services(self)
        _, web = await services.start_tracker()
        client = Client(self, web.url)
        stream = await EventStream.open(self, client)
        await stream.wait_for("ready")
        await web.stopService()
        await stream.closed
        self.assertEqual(web.hub.clients, 0)
        self.assertIsNone(web.port)
