"""
Tests for L{twistedp2p.peer.service}: options and the service wiring, on a
MemoryReactorClock.
"""

from __future__ import annotations

import socket

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import identity
from twistedp2p.peer import service

from .helpers import all_frames, frame, sync_run, temp_dir


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def parse(self, *args: str) -> service.Options:
        config = service.Options()
        config.parseOptions(list(args))
        return config

    def test_defaults(self) -> None:
        config = self.parse()
        self.assertEqual(config["tracker"], ["tcp:127.0.0.1:9999"])
        self.assertEqual(config["listen"], "tcp:0")
        self.assertEqual((config["max-uploads"], config["max-downloads"]), (4, 4))
        self.assertEqual(config["min-upload-rate"], 4096)
        self.assertEqual(config["ttfb-timeout"], 2.0)
        self.assertEqual(config["hostname"], socket.gethostname())
        self.assertTrue(config["repo"].endswith("p2p-repo"))
        self.assertEqual(config["share-root"], [])
        self.assertFalse(config["no-shell"])

    def test_repeatable(self) -> None:
        a, b = self.dir / "a", self.dir / "b"
        a.mkdir()
        b.mkdir()
        config = self.parse(
            "--tracker", "tcp:10.0.0.1:9999", "--tracker", "tcp:host=10.0.0.2:port=9999",
            "--share-root", str(a), "--share-root", str(b),
        )
        self.assertEqual(config["tracker"], ["tcp:10.0.0.1:9999", "tcp:host=10.0.0.2:port=9999"])
        self.assertEqual(config["share-root"], [str(a.resolve()), str(b.resolve())])

    def test_values(self) -> None:
        config = self.parse("--max-sessions", "9", "--ttfb-timeout", "0.5", "--hostname", "lab-1",
                            "--repo", str(self.dir / "r"), "--listen", "tcp:7070", "--no-shell")
        self.assertEqual(
            (config["max-sessions"], config["ttfb-timeout"], config["hostname"], config["repo"],
             config["listen"], config["no-shell"]),
            (9, 0.5, "lab-1", str(self.dir / "r"), "tcp:7070", True),
        )

    def test_slot_options(self) -> None:
        """
        Uploads and downloads have separate slots; --max-sessions K (the
        old shared cap) now sets both, and each can be set on its own.
        """
        config = self.parse("--max-sessions", "9")
        self.assertEqual((config["max-uploads"], config["max-downloads"]), (9, 9))
        config = self.parse("--max-sessions", "9", "--max-uploads", "2")
        self.assertEqual((config["max-uploads"], config["max-downloads"]), (2, 9))
        config = self.parse("--max-downloads", "1", "--min-upload-rate", "0")
        self.assertEqual((config["max-uploads"], config["max-downloads"], config["min-upload-rate"]), (4, 1, 0))
        self.assertEqual(self.parse("--min-upload-rate", "16K")["min-upload-rate"], 16384)

    def test_swarm_options(self) -> None:
        config = self.parse()
        self.assertEqual(
            (config["max-sources"], config["upload-rate"], config["download-rate"], config["max-file-size"]),
            (4, 0, 0, None),
        )
        config = self.parse("--max-sources", "2", "--upload-rate", "2M", "--download-rate", "512K",
                            "--max-file-size", "1G")
        self.assertEqual(
            (config["max-sources"], config["upload-rate"], config["download-rate"], config["max-file-size"]),
            (2, 2 * 1024**2, 512 * 1024, 1024**3),
        )
        for args in (["--upload-rate", "fast"], ["--download-rate", "-1"], ["--max-file-size", "1X"],
                     ["--max-sources", "0"]):
            self.assertRaises(usage.UsageError, self.parse, *args)

    def test_help_says_suffixes_are_binary(self) -> None:
        text = " ".join(str(service.Options()).split())
        self.assertIn("--upload-rate= Cap on the peer's total upload rate [default: 0]. Bytes per second", text)
        self.assertIn("K, M and G mean KiB, MiB and GiB (1024-based), e.g. 2M; 0 means unlimited", text)

    def test_errors(self) -> None:
        afile = self.dir / "file"
        afile.write_text("x")
        for args, text in [
            (["--max-sessions", "0"], "at least 1"),
            (["--max-sessions", "many"], "at least 1"),
            (["--ttfb-timeout", "soon"], "greater than 0"),
            (["--ttfb-timeout", "0"], "greater than 0"),
            (["--ttfb-timeout", "nan"], "greater than 0"),
            (["--share-root", str(self.dir / "missing")], "not an existing directory"),
            (["--share-root", str(afile)], "not an existing directory"),
            (["--tracker", "bogus:thing"], "--tracker 'bogus:thing': the port must be"),
            (["--tracker", "tcp:nohost"], "bad --tracker endpoint"),
            (["--listen", "nonsense:1"], "--listen 'nonsense:1': give a PORT"),
            (["--hostname", "a\tb"], "bad --hostname"),
            (["--hostname", ""], "bad --hostname"),
            (["--repo", str(afile)], "not a directory"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(text, str(e), args)


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.reactor = MemoryReactorClock()

    def make(self, listen: str = "tcp:7070") -> service.PeerService:
        config = service.Options()
        config.parseOptions(["--repo", str(self.dir / "repo"), "--hostname", "me", "--listen", listen,
                             "--tracker", "tcp:127.0.0.1:9999", "--no-shell"])
        return service.makeService(config, self.reactor, run_in_thread=sync_run)

    def test_attributes(self) -> None:
        peer = self.make()
        self.assertTrue((self.dir / "repo").is_dir())
        self.assertEqual(peer.node.hostname, "me")
        self.assertIs(peer.node.library, peer.library)
        self.assertEqual(peer.slots.limits, {"up": 4, "down": 4})
        self.assertEqual(peer.node.settings.ttfb_timeout, 2.0)
        self.assertNoResult(peer.whenListening())

    def test_limits_wired(self) -> None:
        config = service.Options()
        config.parseOptions(["--repo", str(self.dir / "repo"), "--no-shell", "--upload-rate", "1M",
                             "--download-rate", "2M", "--max-file-size", "3K", "--max-sources", "5"])
        peer = service.makeService(config, self.reactor, run_in_thread=sync_run)
        self.assertEqual(peer.upload_bucket.rate, 1024**2)
        self.assertIs(peer.upload_factory.bucket, peer.upload_bucket)
        self.assertEqual(peer.download_bucket.rate, 2 * 1024**2)
        self.assertIs(peer.node.download_bucket, peer.download_bucket)
        self.assertEqual((peer.library.max_file_size, peer.node.settings.max_file_size), (3072, 3072))
        self.assertEqual(peer.node.settings.max_sources, 5)
        limits = peer.node.status()["limits"]
        self.assertEqual(limits, {"upload_rate": 1024**2, "download_rate": 2 * 1024**2,
                                  "max_file_size": 3072, "max_sources": 5})
        unlimited = self.make()
        self.assertIsNone(unlimited.upload_bucket)
        self.assertIsNone(unlimited.download_bucket)

    def test_listens_before_hello(self) -> None:
        """
        The P2P port is bound first; the tracker connection starts after,
        and hello carries the bound port.
        """
        peer = self.make()
        self.assertEqual(self.reactor.tcpClients, [])
        peer.startService()
        port = self.successResultOf(peer.whenListening())
        self.assertEqual(port.getHost().port, 7070)
        self.assertEqual(peer.node.p2p_port, 7070)
        [(host, tport, factory, timeout, bind)] = self.reactor.tcpClients
        self.assertEqual((host, tport), ("127.0.0.1", 9999))
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        [challenge] = all_frames(transport.value())
        transport.clear()
        self.assertEqual(challenge, {"action": "challenge", "id": 1})
        proto.dataReceived(frame({"status": "success", "id": 1, "nonce": "ab" * 32, "tracker": "trk",
                                  "address": "127.0.0.1"}))
        [hello] = all_frames(transport.value())
        key, signature = hello.pop("key"), hello.pop("signature")
        self.assertEqual(
            hello, {"action": "hello", "id": 2, "hostname": "me", "p2p_port": 7070, "version": 1}
        )
        # Signed with the key kept in the repository.
        self.assertEqual(key, peer.identity.public_key)
        self.assertTrue((self.dir / "repo" / ".p2p" / "identity.key").is_file())
        self.assertTrue(identity.verify(key, signature, identity.hello_message("ab" * 32, "trk", "127.0.0.1", "me",
                                                                             7070, key)))
        proto.dataReceived(frame({"status": "success", "id": 2, "address": "127.0.0.1"}))
        self.assertEqual(peer.link.state, "connected")
        stopped = peer.stopService()
        self.assertTrue(transport.disconnecting)
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        proto.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.tcpServers[0][1], peer.upload_factory)

    def test_corrupt_key_file_is_fatal_and_kept(self) -> None:
        """
        A key file that cannot be read stops the peer with one clear line;
        the file is left as it was (never silently replaced).
        """
        state = self.dir / "repo" / ".p2p"
        state.mkdir(parents=True)
        (state / "identity.key").write_bytes(b"not a key")
        fatal = []
        peer = service.PeerService(
            self.reactor, hostname="me", repo=str(self.dir / "repo"), share_roots=[],
            trackers=["tcp:127.0.0.1:9999"], listen="tcp:7070", on_fatal=fatal.append,
        )
        peer.startService()
        [message] = fatal
        self.assertIn("identity.key", message)
        self.assertIn("corrupt", message)
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual((state / "identity.key").read_bytes(), b"not a key")
        self.failureResultOf(peer.whenListening())

    def test_listen_failure_is_fatal(self) -> None:
        fatal = []
        config = service.Options()
        config.parseOptions(["--repo", str(self.dir / "repo"), "--no-shell"])
        from twisted.internet.testing import RaisingMemoryReactor
        from twisted.internet.error import CannotListenError

        reactor = RaisingMemoryReactor(listenException=CannotListenError("", 7070, "in use"))
        peer = service.PeerService(
            reactor, hostname="me", repo=str(self.dir / "repo"), share_roots=[],
            trackers=["tcp:127.0.0.1:9999"], listen="tcp:7070", on_fatal=fatal.append,
        )
        peer.startService()
        self.failureResultOf(peer.whenListening(), CannotListenError)
        self.assertEqual(len(fatal), 1)
        self.assertIn("cannot listen on tcp:7070", fatal[0])
