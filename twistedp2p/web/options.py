"""
The ``--web`` and ``--web-token`` options both services share.

Merge L{WEB_OPTIONS} into a service's C{Options.optParameters} and call
L{check_web_options} from its C{postOptions}.  The rule: the dashboards can
change things (the peer publishes and fetches, the tracker evicts), so a
dashboard reachable from other hosts needs a token.  When C{--web} binds
anything but loopback (or a UNIX socket) and no C{--web-token} is given,
one is generated and printed once.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import sys
from typing import Any, TextIO

from twisted.python import usage

from twistedp2p.endpoints import parse_server

#: Option specs to append to a service's C{optParameters}.
WEB_OPTIONS: list[list[Any]] = [
    [
        "web",
        None,
        None,
        "Serve the web dashboard, JSON API and /metrics here: PORT, IP:PORT or a server endpoint "
        "(e.g. 127.0.0.1:8080, 8080, tcp:8080:interface=127.0.0.1); off unless given.",
    ],
    [
        "web-token",
        None,
        None,
        "Token the dashboard API requires (header X-P2P-Token or Authorization: Bearer). "
        "Generated and printed when --web binds beyond loopback and none is given.",
    ],
]

_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{8,256}$")


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split a server endpoint string into its kind, positional arguments and
    keyword arguments, honouring backslash escapes (C{tcp6:80:interface=\\:\\:1}).
    """
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for c in chars:
        if c == "\\":
            current.append(next(chars, ""))
        elif c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    kind, rest = parts[0].lower(), parts[1:]
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in rest:
        if "=" in part:
            key, _, value = part.partition("=")
            kwargs[key] = value
        else:
            args.append(part)
    return kind, args, kwargs


def is_local_endpoint(description: str) -> bool:
    """
    Whether a server endpoint string only accepts local connections: TCP
    bound to a loopback address (or C{localhost}), or a UNIX socket.
    Anything else (all interfaces, a LAN address, other endpoint kinds)
    counts as reachable from elsewhere.
    """
    kind, _, kwargs = split_endpoint(description)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = kwargs.get("interface", "")
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def is_tcp_endpoint(description: str) -> bool:
    """
    Whether browsers reach this endpoint over TCP (so DNS-rebinding checks
    on the C{Host} header apply).
    """
    return split_endpoint(description)[0] in ("tcp", "tcp6", "ssl")


def dashboard_link(url: str | None, token: str | None) -> str | None:
    """
    The address to open a dashboard at, from this host: C{url} (see
    L{twistedp2p.web.server.WebService.url}) with a wildcard host replaced
    by loopback, and the token in the fragment (C{#token=...}), where the
    page picks it up.  None when the dashboard is not on TCP.
    """
    if url is None:
        return None
    url = url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
    return f"{url}#token={token}" if token else url


def say_dashboard(web: Any, label: str) -> None:
    """
    Once C{web} (a L{twistedp2p.web.server.WebService}) listens, print
    where to open it on the real terminal (stdout as the process got it),
    once: C{LABEL dashboard: http://127.0.0.1:8080/#token=...}.
    """
    from twistedp2p.process import say_on_terminal

    def listening(_: Any) -> None:
        link = dashboard_link(web.url, web.token)
        if link is not None:
            say_on_terminal(f"{label} dashboard: {link}")

    web.whenListening().addCallbacks(listening, lambda _: None)


def check_web_options(config: Any, out: TextIO | None = None) -> None:
    """
    Check C{--web}/C{--web-token} in a parsed options mapping and settle the
    token.

    Sets C{config["web-token-generated"]} (True when this call made the
    token up and printed it on C{out}, default stderr).

    @raise usage.UsageError: for an unusable endpoint or token, or a token
        without C{--web}.
    """
    endpoint = config.get("web")
    token = config.get("web-token")
    config["web-token-generated"] = False
    if endpoint is None:
        if token is not None:
            raise usage.UsageError("--web-token needs --web ENDPOINT")
        return
    endpoint = config["web"] = parse_server(endpoint, option="web")
    if token is not None and not _TOKEN.match(token):
        raise usage.UsageError(
            "--web-token must be 8 to 256 characters from A-Z a-z 0-9 . _ ~ + / = -"
        )
    if token is None and not is_local_endpoint(endpoint):
        token = secrets.token_urlsafe(24)
        config["web-token"] = token
        config["web-token-generated"] = True
        stream = out if out is not None else sys.stderr
        stream.write(
            f"--web {endpoint} is reachable from other hosts, so the dashboard needs a token.\n"
            f"Generated web token: {token}\n"
            f"Open the dashboard as http://HOST:PORT/#token={token} "
            f"(or give your own with --web-token).\n"
        )
        stream.flush()
