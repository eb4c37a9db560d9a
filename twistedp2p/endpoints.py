"""
The one parser for every command-line option that names an endpoint
(C{--tracker}, C{--listen}, C{--web}).

Three spellings are accepted:

  - a bare port: C{5000} means C{tcp:5000} for a server (every
    interface), C{127.0.0.1:5000} for a client;
  - C{HOST[:PORT]}: C{127.0.0.1:9999}, C{tracker.lan}, C{[::1]:9999}
    (IPv6 in brackets when a port follows); a client connects to it with a
    L{HostnameEndpoint}, a server binds that interface (an IP address, or
    C{localhost} for 127.0.0.1);
  - a Twisted endpoint string, as before (C{tcp:7070},
    C{tcp:host=10.0.0.1:port=9999}, C{unix:/run/p2p.sock}, ...).

A value whose part before the first colon is a known endpoint type is an
endpoint string; anything else must be a port or C{HOST[:PORT]}.  Parsed
server values become endpoint strings (the services, the backlog and the
dashboard's loopback check work on those), with every address quoted by
L{quoteStringArgument}; parsed client addresses stay C{HOST:PORT} and are
turned into a L{HostnameEndpoint} by L{client_endpoint}, never pasted into
an endpoint string.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, NamedTuple

from twisted.internet.endpoints import HostnameEndpoint, clientFromString, quoteStringArgument, serverFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python import usage

#: Seconds a client endpoint built from C{HOST:PORT} waits to connect.
CONNECT_TIMEOUT = 30

_PORT = re.compile(r"^[0-9]{1,5}$")
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


class Address(NamedTuple):
    """
    A host (name or IP address, IPv6 without brackets) and a port.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _NoReactor:
    """
    Stands in for the reactor while only checking an endpoint string.
    """


@lru_cache(maxsize=None)
def _kinds(client: bool) -> frozenset[str]:
    """
    The endpoint types Twisted knows here (built-in and plugins), lower case.
    """
    from twisted.internet.interfaces import (
        IStreamClientEndpointStringParserWithReactor,
        IStreamServerEndpointStringParser,
    )
    from twisted.plugin import getPlugins

    interface: Any = IStreamClientEndpointStringParserWithReactor if client else IStreamServerEndpointStringParser
    kinds = {"tcp", "ssl", "unix"}
    try:
        kinds.update(str(plugin.prefix).lower() for plugin in getPlugins(interface))
    except Exception:
        pass
    return frozenset(kinds)


def _is_endpoint_string(value: str, client: bool) -> bool:
    kind, colon, _ = value.partition(":")
    return bool(colon) and kind.lower() in _kinds(client)


def _port(text: str, option: str, value: str, lowest: int) -> int:
    if not _PORT.match(text) or not lowest <= int(text) <= 65535:
        raise usage.UsageError(f"--{option} {value!r}: the port must be a number from {lowest} to 65535")
    return int(text)


def _is_hostname(host: str) -> bool:
    if len(host) > 253:
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(_LABEL.match(label) for label in labels)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_host_port(value: str, *, option: str, default_port: int | None, lowest_port: int = 1) -> tuple[str, int]:
    """
    Split C{HOST[:PORT]} (C{[V6]:PORT}, or an IPv6 address alone) into
    host and port.  The host is returned as written, without brackets;
    it may be empty (C{:PORT}); the caller checks it.

    @raise usage.UsageError: no port and no default, or a bad port.
    """
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not _is_ip(host) or ":" not in host:
            raise usage.UsageError(f"--{option} {value!r}: brackets hold an IPv6 address, as in [::1]:9999")
        if rest and not rest.startswith(":"):
            raise usage.UsageError(f"--{option} {value!r}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:
        if not _is_ip(value):
            raise usage.UsageError(f"--{option} {value!r}: write an IPv6 address with a port as [ADDRESS]:PORT")
        host, port_text = value, None
    else:
        host, colon, port_text_ = value.partition(":")
        port_text = port_text_ if colon else None
    if port_text is None:
        if default_port is None:
            raise usage.UsageError(f"--{option} {value!r}: a port is needed (HOST:PORT)")
        return host, default_port
    return host, _port(port_text, option, value, lowest_port)


def parse_client(value: str, *, option: str = "tracker", default_port: int = 9999) -> str:
    """
    Check a client endpoint option: C{HOST[:PORT]}, a bare port (on
    127.0.0.1) or a Twisted client endpoint string.

    @return: the endpoint string as given, or the address as C{HOST:PORT}
        (C{[V6]:PORT}), for L{client_endpoint}.
    @raise usage.UsageError: with a message naming C{--option}.
    """
    value = value.strip()
    if not value:
        raise usage.UsageError(f"--{option}: empty; give HOST[:PORT] or an endpoint string")
    if _PORT.match(value):
        return str(Address("127.0.0.1", _port(value, option, value, 1)))
    if _is_endpoint_string(value, client=True):
        try:
            clientFromString(_NoReactor(), value)
        except Exception as e:
            raise usage.UsageError(f"bad --{option} endpoint {value!r}: {_reason(e)}")
        return value
    host, port = split_host_port(value, option=option, default_port=default_port)
    if not (_is_ip(host) or _is_hostname(host)):
        raise usage.UsageError(
            f"--{option} {value!r}: not HOST[:PORT] (e.g. 192.168.1.5:9999, tracker.lan, [::1]:9999) "
            f"nor an endpoint string (e.g. tcp:HOST:PORT)"
        )
    return str(Address(host, port))


def client_address(description: str) -> Address | None:
    """
    The L{Address} of a value L{parse_client} returned, or None when it is
    an endpoint string.
    """
    if _is_endpoint_string(description, client=True):
        return None
    host, port = split_host_port(description, option="tracker", default_port=None)
    return Address(host, port)


def client_endpoint(reactor: Any, description: str, timeout: float = CONNECT_TIMEOUT) -> IStreamClientEndpoint:
    """
    The client endpoint for a value L{parse_client} returned: a
    L{HostnameEndpoint} for C{HOST:PORT} (names resolved off the reactor
    thread, IPv4 and IPv6 tried), else C{clientFromString}.
    """
    address = client_address(description)
    if address is None:
        return clientFromString(reactor, description)
    return HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)


def parse_server(value: str, *, option: str = "listen", default_port: int | None = None) -> str:
    """
    Check a server endpoint option: a bare port, C{HOST[:PORT]} (HOST an
    IP address or C{localhost}; C{:PORT} for every interface) or a Twisted
    server endpoint string.

    @return: a server endpoint string.
    @raise usage.UsageError: with a message naming C{--option}.
    """
    value = value.strip()
    if not value:
        raise usage.UsageError(f"--{option}: empty; give a PORT, HOST:PORT or an endpoint string")
    if _PORT.match(value):
        return f"tcp:{_port(value, option, value, 0)}"
    if _is_endpoint_string(value, client=False):
        try:
            serverFromString(_NoReactor(), value)
        except Exception as e:
            raise usage.UsageError(f"bad --{option} endpoint {value!r}: {_reason(e)}")
        return value
    host, port = split_host_port(value, option=option, default_port=default_port, lowest_port=0)
    if host == "":
        return f"tcp:{port}"
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise usage.UsageError(
            f"--{option} {value!r}: give a PORT, IP:PORT (e.g. 5000, 127.0.0.1:5000, [::1]:5000) "
            f"or an endpoint string (e.g. tcp:5000:interface=127.0.0.1)"
        )
    kind = "tcp6" if ip.version == 6 else "tcp"
    return f"{kind}:{port}:interface={quoteStringArgument(str(ip))}"


def _reason(e: Exception) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]
