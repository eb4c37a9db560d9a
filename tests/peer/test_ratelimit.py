"""
Tests for L{twistedp2p.peer.ratelimit}: sizes, the token bucket on a
Clock, the throttled consumer, pause reasons.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.ratelimit import PauseReasons, ThrottledConsumer, TokenBucket, parse_size


class ParseSizeTests(SynchronousTestCase):
    def test_suffixes_are_binary(self) -> None:
        for text, value in (("0", 0), ("100", 100), ("2K", 2048), ("2k", 2048), ("2M", 2 * 1024**2),
                            ("1.5M", 3 * 1024**2 // 2), ("1G", 1024**3), ("3KiB", 3072), ("4MB", 4 * 1024**2),
                            ("2M/s", 2 * 1024**2), (" 7 ", 7)):
            self.assertEqual(parse_size(text), value, text)

    def test_bad(self) -> None:
        for text in ("", "M", "-1", "1X", "nan", "inf", "1.5.5K"):
            self.assertRaises(ValueError, parse_size, text)


class TokenBucketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_refill_and_debt(self) -> None:
        bucket = TokenBucket(1000, self.clock, burst=500)
        self.assertEqual(bucket.tokens, 500)
        bucket.take(1500)
        self.assertEqual(bucket.tokens, -1000)
        self.assertFalse(bucket.available())
        self.clock.advance(0.5)
        self.assertEqual(bucket.tokens, -500)
        self.clock.advance(10)
        self.assertEqual(bucket.tokens, 500)
        self.assertEqual(bucket.taken, 1500)

    def test_waiters_in_order_when_out_of_debt(self) -> None:
        bucket = TokenBucket(1000, self.clock, burst=100)
        bucket.take(600)
        called = []
        bucket.when_available(lambda: called.append("a"))
        bucket.when_available(lambda: called.append("b"))
        self.assertFalse(bucket.available())
        self.clock.advance(0.49)
        self.assertEqual(called, [])
        self.clock.advance(0.02)
        self.assertEqual(called, ["a", "b"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waiter_takes_tokens_next_one_waits(self) -> None:
        bucket = TokenBucket(1000, self.clock, burst=100)
        bucket.take(100)
        called = []

        def first() -> None:
            called.append("first")
            bucket.take(1000)

        bucket.when_available(first)
        bucket.when_available(lambda: called.append("second"))
        self.clock.advance(0.01)
        self.assertEqual(called, ["first"])
        self.clock.advance(1.0)
        self.assertEqual(called, ["first", "second"])

    def test_cancel_and_stop(self) -> None:
        bucket = TokenBucket(1000, self.clock)
        bucket.take(10**6)
        called = []
        waiter = lambda: called.append(1)  # noqa: E731
        bucket.when_available(waiter)
        bucket.cancel(waiter)
        bucket.when_available(lambda: called.append(2))
        bucket.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**4)
        self.assertEqual(called, [])

    def test_unlimited(self) -> None:
        bucket = TokenBucket(0, self.clock)
        bucket.take(10**12)
        self.assertTrue(bucket.available())
        called = []
        bucket.when_available(lambda: called.append(1))
        self.assertEqual(called, [1])
        self.assertEqual(bucket.taken, 10**12)

    def test_default_burst(self) -> None:
        self.assertEqual(TokenBucket(1000, self.clock).burst, 64 * 1024)
        self.assertEqual(TokenBucket(100 * 1024**2, self.clock).burst, 5 * 1024**2)

    def test_long_run_rate(self) -> None:
        """
        A sender that writes whenever the bucket allows moves rate x time,
        plus at most the burst and one write of debt.
        """
        bucket = TokenBucket(100_000, self.clock, burst=10_000)
        sent = [0]

        def send() -> None:
            bucket.take(4096)
            sent[0] += 4096
            bucket.when_available(send)

        send()
        for _ in range(1000):
            self.clock.advance(0.01)
        self.assertLessEqual(sent[0], 100_000 * 10 + 10_000 + 4096)
        self.assertGreaterEqual(sent[0], 100_000 * 10 - 4096)


class ThrottledConsumerTests(SynchronousTestCase):
    def test_pull_producer_held_while_in_debt(self) -> None:
        import io

        clock = Clock()
        bucket = TokenBucket(10_000, clock, burst=1000)
        transport = StringTransport()
        consumer = ThrottledConsumer(transport, bucket)
        sender = FileSender()
        sender.CHUNK_SIZE = 1000
        d = sender.beginFileTransfer(io.BytesIO(b"x" * 5000), consumer)
        self.assertIs(transport.producer, consumer)
        consumer.resumeProducing()
        self.assertEqual(len(transport.value()), 1000)
        # The burst is spent: the next chunk waits for the refill.
        consumer.resumeProducing()
        consumer.resumeProducing()
        self.assertEqual(len(transport.value()), 1000)
        clock.advance(0.05)
        self.assertEqual(len(transport.value()), 2000)
        clock.advance(0.1)
        self.assertEqual(len(transport.value()), 2000)
        for _ in range(10):
            clock.advance(0.1)
            consumer.resumeProducing()
        self.assertEqual(self.successResultOf(d), b"x")
        self.assertIsNone(transport.producer)

    def test_stop(self) -> None:
        import io

        clock = Clock()
        bucket = TokenBucket(1000, clock, burst=100)
        transport = StringTransport()
        consumer = ThrottledConsumer(transport, bucket)
        sender = FileSender()
        d = sender.beginFileTransfer(io.BytesIO(b"x" * 50000), consumer)
        consumer.resumeProducing()
        consumer.resumeProducing()
        consumer.stopProducing()
        self.failureResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])


class PauseReasonsTests(SynchronousTestCase):
    def test_paused_while_any_reason(self) -> None:
        log = []
        reasons = PauseReasons(lambda: log.append("pause"), lambda: log.append("resume"))
        reasons.add("rate")
        reasons.add("disk")
        reasons.add("rate")
        reasons.remove("rate")
        self.assertEqual(log, ["pause"])
        self.assertIn("disk", reasons)
        reasons.remove("disk")
        reasons.remove("disk")
        self.assertEqual(log, ["pause", "resume"])
        self.assertFalse(reasons.paused)
