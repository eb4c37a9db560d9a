"""
Tests for L{twistedp2p.logs}: one JSON object per line with stable keys,
JSON-safe fields, failures, legacy events, and the twistd C{--logger}
factory's choice of file.
"""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.logger import LogLevel, Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import logs
from twistedp2p.logs import FIXED_KEYS, json_logger, json_observer, twistd_logfile

from .helpers import temp_dir


class Thing:
    def __repr__(self) -> str:
        return "<thing>"


class ObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.publisher = LogPublisher(json_observer(self.out))
        self.log = Logger(namespace="twistedp2p.test", observer=self.publisher)

    def lines(self) -> list[dict]:
        text = self.out.getvalue()
        self.assertTrue(text.endswith("\n"))
        return [json.loads(line) for line in text.splitlines()]

    def test_stable_keys_and_fields(self) -> None:
        self.log.info("session {session_id} up: {hostname}", session_id="t:1", hostname="lab-pc",
                      obj=Thing(), raw=b"\xff", ratio=float("inf"), nested={"a": [1, (2, 3)]}, time=5)
        [record] = self.lines()
        self.assertEqual(list(record)[: len(FIXED_KEYS)], list(FIXED_KEYS))
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "twistedp2p.test")
        self.assertEqual(record["log_format"], "session {session_id} up: {hostname}")
        self.assertEqual(record["text"], "session t:1 up: lab-pc")
        self.assertIsInstance(record["time"], float)
        self.assertTrue(record["iso_time"].endswith("+00:00"))
        self.assertEqual((record["session_id"], record["hostname"]), ("t:1", "lab-pc"))
        self.assertEqual((record["obj"], record["raw"], record["ratio"]), ("<thing>", "\ufffd", "inf"))
        self.assertEqual(record["nested"], {"a": [1, [2, 3]]})
        self.assertEqual(record["field_time"], 5)
        self.assertFalse(any(k.startswith("log_") and k != "log_format" for k in record))

    def test_one_line_per_event_even_with_newlines(self) -> None:
        self.log.warn("a\nb {x}", x="c\nd")
        self.log.error("second")
        records = self.lines()
        self.assertEqual([r["level"] for r in records], ["warn", "error"])
        self.assertEqual(records[0]["text"], "a\nb c\nd")

    def test_failure(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("boom {what}", what="x")
        [record] = self.lines()
        self.assertEqual(record["level"], "critical")
        self.assertEqual(record["exception"], "builtins.ZeroDivisionError")
        self.assertIn("ZeroDivisionError", record["failure"])
        self.assertEqual(record["text"], "boom x")

    def test_legacy_events(self) -> None:
        # What twisted.python.log.msg("hello", "world") becomes on its way
        # to a new-style observer (twistd's stdout redirection uses it).
        from twisted.logger._legacy import publishToNewObserver

        publishToNewObserver(
            json_observer(self.out),
            {"message": ("hello", "world"), "isError": 0, "system": "-", "time": 12.0},
            lambda event: " ".join(event["message"]),
        )
        [record] = self.lines()
        self.assertEqual((record["text"], record["level"], record["system"], record["time"]),
                         ("hello world", "info", "-", 12.0))
        self.assertNotIn("message", record)

    def test_unencodable_event_becomes_an_error_line(self) -> None:
        self.publisher({"log_time": 1.0, "log_level": LogLevel.info, "log_namespace": "x",
                        "log_format": "{x}", "x": float("nan")})
        [record] = self.lines()
        self.assertEqual(record["x"], "nan")


class LoggerFactoryTests(SynchronousTestCase):
    def test_twistd_logfile(self) -> None:
        cases = [
            (["-n", "--pidfile=", "--logfile=t.log", "p2ptracker", "--logfile=x"], ("t.log", True)),
            (["--logfile", "a.log", "p2ppeer"], ("a.log", False)),
            (["-l", "b.log", "-n", "p2ppeer"], ("b.log", True)),
            (["-lc.log", "p2ppeer"], ("c.log", False)),
            (["--pidfile", "p.pid", "p2ppeer", "-l", "no.log"], (None, False)),
            (["--nodaemon", "--logger", "twistedp2p.logs.json_logger", "p2ptracker"], (None, True)),
        ]
        for argv, expected in cases:
            self.assertEqual(twistd_logfile(argv), expected, argv)

    def test_json_logger_writes_to_the_environment_file(self) -> None:
        path = temp_dir(self) / "peer.log"
        self.patch(os, "environ", {**os.environ, "P2P_LOG_FILE": str(path)})
        observer = json_logger()
        Logger(namespace="t", observer=observer).info("hello {n}", n=1)
        record = json.loads(path.read_text().splitlines()[0])
        self.assertEqual((record["text"], record["n"]), ("hello 1", 1))

    def test_json_logger_follows_twistd_logfile_and_stdout(self) -> None:
        path = temp_dir(self) / "tracker.log"
        env = {k: v for k, v in os.environ.items() if k != "P2P_LOG_FILE"}
        self.patch(os, "environ", env)
        self.patch(sys, "argv", ["twistd", "-n", f"--logfile={path}", "p2ptracker"])
        Logger(namespace="t", observer=json_logger()).info("to the file")
        self.assertEqual(json.loads(path.read_text())["text"], "to the file")
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "argv", ["twistd", "-n", "--logfile=-", "p2ptracker"])
        Logger(namespace="t", observer=json_logger()).info("to stdout")
        self.assertEqual(json.loads(out.getvalue())["text"], "to stdout")
        self.assertTrue(callable(logs.json_logger))
