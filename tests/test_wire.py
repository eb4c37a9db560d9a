"""
Tests for the shared message format: decode errors, request validation,
shared-name rules.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import wire


class DecodeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        message = {"action": "fetch", "fname": "näme.pdf", "id": 3}
        self.assertEqual(wire.decode(wire.encode(message)), message)

    def assertCode(self, frame: bytes, code: str) -> None:
        with self.assertRaises(wire.WireError) as raised:
            wire.decode(frame)
        self.assertEqual(raised.exception.code, code)

    def test_bad_utf8(self) -> None:
        self.assertCode(b'{"action": "\xff"}', "bad_utf8")

    def test_bad_json(self) -> None:
        self.assertCode(b"{not json", "bad_json")
        self.assertCode(b"", "bad_json")

    def test_white_space_and_trailing_data(self) -> None:
        """
        JSON's own rules around the value: white space is fine, anything
        else after it is not.
        """
        for frame in (b' {"a": 1}', b'{"a": 1}\n', b'\t{"a": 1} '):
            self.assertEqual(wire.decode(frame), {"a": 1})
        for frame in (b'{"a": 1}x', b'{"a": 1}{}', b'{"a": 1} 2', b"  ", b'{"a": '):
            self.assertCode(frame, "bad_json")

    def test_nan_is_not_json(self) -> None:
        self.assertCode(b'{"file_size": NaN}', "bad_json")

    def test_deep_nesting_is_bad_json(self) -> None:
        self.assertCode(b"[" * 100000 + b"]" * 100000, "bad_json")

    def test_not_object(self) -> None:
        for frame in (b"[]", b"1", b'"hello"', b"null"):
            self.assertCode(frame, "not_object")


class ParseRequestTests(SynchronousTestCase):
    def test_good_names_checked_once_bad_names_always(self) -> None:
        """
        Valid shared names are remembered; invalid ones never are.
        """
        table = wire.TRACKER_REQUESTS
        for _ in range(2):
            self.assertEqual(wire.parse_request({"action": "fetch", "fname": "ok.txt"}, table).fields["fname"], "ok.txt")
            with self.assertRaises(wire.WireError):
                wire.parse_request({"action": "fetch", "fname": "../x"}, table)
        self.assertIn("ok.txt", wire._good_fnames)
        self.assertNotIn("../x", wire._good_fnames)

    def parse(self, message):
        return wire.parse_request(message, wire.TRACKER_REQUESTS)

    def assertCode(self, message, code: str) -> None:
        with self.assertRaises(wire.WireError) as raised:
            self.parse(message)
        self.assertEqual(raised.exception.code, code)

    def test_hello_seed_and_native(self) -> None:
        seed = self.parse({"action": "hello", "hostname": "a", "p2p_port": 5000})
        self.assertEqual(seed.fields["version"], None)
        self.assertIsNone(seed.id)
        native = self.parse(
            {"action": "hello", "hostname": "a", "p2p_port": 5000, "version": 1, "id": 9}
        )
        self.assertEqual((native.fields["version"], native.id), (1, 9))

    def test_defaults(self) -> None:
        request = self.parse({"action": "publish", "fname": "x.txt"})
        self.assertEqual(request.fields["allow_overwrite"], False)
        self.assertIsNone(request.fields["sha256"])
        self.assertEqual(self.parse({"action": "search"}).fields["pattern"], "")

    def test_unknown_extra_fields_are_ignored(self) -> None:
        request = self.parse({"action": "ping", "whatever": [1, 2]})
        self.assertEqual(request.fields, {})

    def test_errors(self) -> None:
        self.assertCode({}, "no_action")
        self.assertCode({"action": 7}, "no_action")
        self.assertCode({"action": "rm -rf"}, "unknown_action")
        self.assertCode({"action": "hello", "hostname": "a"}, "bad_field")
        self.assertCode({"action": "hello", "hostname": "a", "p2p_port": "80"}, "bad_field")
        self.assertCode({"action": "hello", "hostname": "a", "p2p_port": True}, "bad_field")
        self.assertCode({"action": "hello", "hostname": "a", "p2p_port": 70000}, "bad_field")
        self.assertCode({"action": "hello", "hostname": "", "p2p_port": 1}, "bad_field")
        self.assertCode({"action": "hello", "hostname": "a\x00", "p2p_port": 1}, "bad_field")
        self.assertCode({"action": "publish", "fname": "x", "file_size": -1}, "bad_field")
        self.assertCode({"action": "publish", "fname": "x", "sha256": "ABC"}, "bad_field")
        self.assertCode({"action": "publish", "fname": "x", "allow_overwrite": 1}, "bad_field")
        self.assertCode({"action": "fetch", "fname": "x", "limit": 0}, "bad_field")
        self.assertCode({"action": "ping", "id": -1}, "bad_id")
        self.assertCode({"action": "ping", "id": "7"}, "bad_id")

    def test_safe_id(self) -> None:
        self.assertEqual(wire.safe_id({"id": 4}), 4)
        self.assertIsNone(wire.safe_id({"id": True}))
        self.assertIsNone(wire.safe_id({"id": "4"}))


class FnameTests(SynchronousTestCase):
    def test_good_names(self) -> None:
        for name in (
            "notes.pdf", "a b.txt", "résumé.doc", "x" * 255, "日本語.txt",
            "a/b", "docs/sub/my notes.txt", "x/" + "y" * 253,
        ):
            self.assertIsNone(wire.fname_problem(name), name)

    def test_bad_names(self) -> None:
        for name in (
            "", "a\\b", "..", "../etc/passwd", "a..b", ".hidden", "tab\there",
            "nl\n", "x" * 256, "é" * 128, " lead", "trail ", None, 3,
            "/abs", "a/", "a//b", "/", "a/../b", "a/.hidden", ".p2p/library.json",
            "a /b", "a/ b", "docs/x" + "y" * 250, "a/\x00",
        ):
            self.assertIsNotNone(wire.fname_problem(name), repr(name))

    def test_folders(self) -> None:
        self.assertIsNone(wire.folder_problem("docs/"))
        self.assertIsNone(wire.folder_problem("docs/sub/"))
        for folder in ("docs", "/", "docs//", "/docs/", ".p2p/", "../", None):
            self.assertIsNotNone(wire.folder_problem(folder), repr(folder))

    def test_sha256(self) -> None:
        self.assertTrue(wire.is_sha256("0" * 64))
        self.assertFalse(wire.is_sha256("0" * 63))
        self.assertFalse(wire.is_sha256("G" * 64))


class ReplyTests(SynchronousTestCase):
    def test_reply_echoes_id(self) -> None:
        self.assertEqual(wire.reply("success", 4, x=1), {"status": "success", "id": 4, "x": 1})
        self.assertEqual(wire.reply("success"), {"status": "success"})

    def test_error(self) -> None:
        self.assertEqual(
            wire.error("bad_field", "nope", 2),
            {"status": "error", "id": 2, "code": "bad_field", "message": "nope"},
        )
