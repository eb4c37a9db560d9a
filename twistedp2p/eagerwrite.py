"""
Eager writes: give bytes to a TCP socket at once instead of on the
reactor's next turn.

C{transport.write} on a Twisted TCP connection only buffers: the bytes go
out on the next reactor turn, after the reactor registered the socket for
writability and polled it.  On a latency-bound exchange (a small answer
to a small request) that turn is a measurable part of the round trip.
L{eager_write} does what that turn would do, now, but only while the
transport has nothing buffered: whatever the socket does not take, and
every write while something is buffered, goes through C{transport.write},
so the order of bytes and Twisted's back-pressure (producers, the
C{bufferSize} limit) stay Twisted's.

This relies on private attributes of C{twisted.internet.tcp.Connection}
(L{REQUIRED_ATTRIBUTES}).  They are checked once, at import, on the
running Twisted's C{tcp.Server}: if any is missing, L{AVAILABLE} is false,
L{capable} answers false for every transport and every write goes through
C{transport.write}.
"""

from __future__ import annotations

import socket
from typing import Any, Sequence

from twisted.internet import tcp
from twisted.logger import Logger

_log = Logger(namespace="twistedp2p.eagerwrite")

#: The attributes of a TCP connection this module reads (and the methods it
#: calls): its socket, its two write buffers, whether it is TLS, connected
#: or closing, its registered producer, and C{startWriting}.
REQUIRED_ATTRIBUTES = (
    "socket",
    "dataBuffer",
    "offset",
    "_tempDataLen",
    "TLS",
    "connected",
    "disconnecting",
    "producer",
    "startWriting",
    "doRead",
)


def _instance_attributes(cls: type) -> set[str]:
    """
    The attribute names C{cls} and its bases have, as class attributes or
    assigned to C{self} in an C{__init__} (the names its code stores).
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(vars(klass))
        init = vars(klass).get("__init__")
        code = getattr(init, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


def supports(cls: type) -> bool:
    """
    Whether connections of C{cls} have every attribute eager writes use.
    """
    names = _instance_attributes(cls)
    return all(name in names for name in REQUIRED_ATTRIBUTES)


#: The running Twisted's TCP server connections have what eager writes need.
AVAILABLE = supports(tcp.Server)
#: The transport types written to eagerly (exact types: a subclass, such as
#: a TLS connection class, may buffer differently).
EAGER_TYPES: tuple[type, ...] = (tcp.Server,) if AVAILABLE else ()


def capable(transport: Any) -> bool:
    """
    Whether L{eager_write} may ever write to C{transport} directly: a plain
    TCP server connection of a Twisted that has the attributes we use.
    (Each write checks the transport's state again.)
    """
    return type(transport) in EAGER_TYPES


def _idle(transport: Any) -> bool:
    """
    Whether C{transport} may be written to directly now: L{capable},
    connected, not closing, not TLS and nothing buffered.
    """
    return (
        type(transport) in EAGER_TYPES
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and not transport.TLS
    )


def eager_write(transport: Any, data: bytes) -> bool:
    """
    Write C{data} to C{transport}: straight to its socket if the transport
    is L{capable}, connected, not closing, not TLS and has nothing
    buffered; the rest (or all of it) through C{transport.write}.

    @return: whether all of C{data} went to the socket directly (then the
        transport knows nothing of it: in particular it will not pull a
        registered non-streaming producer; see L{EagerConsumer}).
    """
    if _idle(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN, or an error the transport will report itself.
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    transport.write(data)
    return False


def eager_write_parts(transport: Any, parts: Sequence[bytes]) -> bool:
    """
    L{eager_write} of the concatenation of C{parts}, given to the socket in
    one C{sendmsg} (one segment for a small header and its body, and no
    copy of a big body to join them).
    """
    if _idle(transport):
        try:
            sent = transport.socket.sendmsg(parts)
        except OSError:
            sent = 0
        total = sum(len(p) for p in parts)
        if sent == total:
            return True
        rest = []
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            rest.append(part[sent:] if sent else part)
            sent = 0
        parts = rest
    transport.writeSequence(list(parts))
    return False


def accept_on_data(port: Any, seconds: int = 10) -> bool:
    """
    Have the kernel hand connections to a listening TCP C{port} only once
    their first bytes arrived (C{TCP_DEFER_ACCEPT}, Linux), for protocols
    where the client speaks first: the accept and the first request are
    then one reactor turn (with L{read_now}) instead of two.  A client that
    sends nothing is accepted anyway once the kernel's SYN-ACK
    retransmissions for C{seconds} are over (about 15 s for 10 on Linux),
    and the protocol's own idle timeout applies from then on.

    @return: whether the option was set (not on other systems, or for a
        port that is not TCP).
    """
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    sock = getattr(port, "socket", None)
    if option is None or sock is None or not isinstance(port, tcp.Port):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, seconds)
    except OSError:
        return False
    return True


def read_now(transport: Any) -> None:
    """
    Read what a just-accepted connection already has, now, rather than on
    the reactor's next turn: call from C{connectionMade} (as its last step)
    of a protocol whose listening port uses L{accept_on_data}.

    Only for L{capable} transports.  Nothing waiting is no harm (the read
    would block, and the reactor reads later as usual); an end of stream or
    an error found here is left to the reactor, which sees it again on its
    next turn and closes the connection as it always does.  A protocol
    error raised by the read aborts the connection, as the reactor would.
    """
    if type(transport) not in EAGER_TYPES or not transport.connected or transport.disconnecting:
        return
    try:
        transport.doRead()
    except Exception:
        _log.failure("reading a new connection failed; closing it")
        transport.abortConnection()


class EagerConsumer:
    """
    A consumer that writes to a transport with L{eager_write}, for a pull
    producer such as L{twisted.protocols.basic.FileSender}.

    A transport pulls a registered non-streaming producer when its buffer
    runs empty on a writable turn.  Bytes that went to the socket directly
    never were in that buffer, so after such a write, while a producer is
    registered, the transport is told to watch for writability as a write
    would have: the producer is pulled on the next writable turn, exactly
    as if the bytes had been buffered and sent then.  Partial sends leave
    the rest in the transport's buffer, which pulls as usual.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if eager_write(transport, data) and transport.producer is not None:
            transport.startWriting()
