"""
JSON logs: one JSON object per line, for log shippers and C{jq}.

Every line has the same keys first: C{time} (seconds since the epoch),
C{iso_time}, C{level} (debug, info, warn, error, critical), C{namespace},
C{log_format} (the message template) and C{text} (the formatted message);
then C{failure}/C{exception} when the event carries a traceback, C{system}
for legacy events, and the event's own named fields, made JSON-safe (an
object that JSON cannot hold becomes its C{repr}).  A field whose name
clashes with a fixed key is kept as C{field_NAME}.

How to use it with twistd: the C{--logger} option takes the name of a
zero-argument callable returning an observer, and twistd then ignores
C{--logfile} for its own observer; so L{json_logger} reads the file name
itself, from C{P2P_LOG_FILE} when set, else from twistd's own
C{--logfile}/C{-l} on the command line (C{-} or none: stdout under C{-n},
C{twistd.log} when daemonised, as twistd does)::

    twistd -n --pidfile= --logfile=tracker.log \\
        --logger=twistedp2p.logs.json_logger p2ptracker

A C{--log-format} option of the C{p2ptracker}/C{p2ppeer} plugins could not
do this: twistd starts logging after the plugin builds its service, with
the observer its own options chose.  Hence the C{./p2p} launcher turns its
C{--log-format json} into this C{--logger} argument.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any, Sequence

from twisted.logger import FileLogObserver, ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.python import logfile
from zope.interface import implementer

#: Keys every line starts with, in this order.
FIXED_KEYS = ("time", "iso_time", "level", "namespace", "log_format", "text")
_RESERVED = set(FIXED_KEYS) | {"failure", "exception", "system"}
#: Nesting depth kept in field values before falling back to repr.
_MAX_DEPTH = 6
#: Longest repr kept for a value JSON cannot hold.
_MAX_REPR = 2000


@implementer(ILogObserver)
class LevelGate:
    """
    An observer that passes the events at or above C{level} on to
    C{observer} (default: the global log publisher) and drops the others
    before any observer formats or writes them.

    twistd's own observers keep every level, debug included: a L{Logger}
    given a gate (C{Logger(observer=gate)}) has its debug events dropped
    here unless the gate's level was lowered (C{--log-level debug}).
    """

    def __init__(self, level: Any = LogLevel.info, observer: ILogObserver | None = None) -> None:
        self.level = level
        self._observer = observer

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is not None and level < self.level:
            return
        (self._observer or globalLogPublisher)(event)


#: The gate of the tracker's own loggers (per-connection events are at debug).
tracker_gate = LevelGate()


def level_named(name: str) -> Any:
    """
    The L{LogLevel} called C{name} (debug, info, warn, error, critical).

    @raise ValueError: for any other name.
    """
    try:
        return LogLevel.levelWithName(name.lower())
    except Exception:
        raise ValueError(f"unknown log level {name!r}: use one of debug, info, warn, error, critical")


def json_safe(value: Any, depth: int = 0) -> Any:
    """
    A JSON-representable copy of C{value}: containers are copied, strings,
    finite numbers, booleans and None kept, everything else turned into
    its C{repr} (bytes are decoded as UTF-8 with replacement).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [json_safe(v, depth + 1) for v in value]
    try:
        text = repr(value)
    except Exception as e:
        text = f"<unrepresentable {type(value).__name__}: {e.__class__.__name__}>"
    return text[:_MAX_REPR]


def event_as_record(event: dict[str, Any]) -> dict[str, Any]:
    """
    The JSON object for one log event (see the module docstring).
    """
    when = event.get("log_time")
    if not isinstance(when, (int, float)):
        when = None
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": when,
        "iso_time": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
        if when is not None
        else None,
        "level": getattr(level, "name", None) or ("error" if event.get("isError") else "info"),
        "namespace": event.get("log_namespace"),
        "log_format": event.get("log_format"),
        "text": _text(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
            record["exception"] = f"{failure.type.__module__}.{failure.type.__qualname__}"
        except Exception as e:
            record["failure"] = f"<cannot format the failure: {e!r}>"
    system = event.get("log_system")
    if system is not None:
        record["system"] = json_safe(system)
    legacy = "log_legacy" in event or ("isError" in event and "message" in event)
    for key, value in event.items():
        if key.startswith("log_") or (legacy and key in _LEGACY_KEYS):
            continue
        name = f"field_{key}" if key in _RESERVED else key
        record[name] = json_safe(value)
    return record


#: Keys of events from the legacy C{twisted.python.log} that the fixed keys
#: already carry.
_LEGACY_KEYS = {"message", "isError", "format", "why", "failure", "time", "system", "logLevel"}


def _text(event: dict[str, Any]) -> str:
    text = formatEvent(event)
    if not text:
        # Legacy log.msg("a", "b") events carry their text in "message".
        message = event.get("message")
        if isinstance(message, (list, tuple)) and message:
            text = " ".join(str(m) for m in message)
        elif event.get("why"):
            text = str(event["why"])
    return text


def format_json_line(event: dict[str, Any]) -> str:
    """
    One line of JSON (no raw newline inside: JSON escapes them).
    """
    try:
        data = json.dumps(event_as_record(event), ensure_ascii=False, allow_nan=False)
    except Exception as e:
        data = json.dumps(
            {
                "time": event.get("log_time"),
                "level": "error",
                "namespace": "twistedp2p.logs",
                "log_format": None,
                "text": f"cannot encode a log event as JSON: {e!r}",
            }
        )
    return data + "\n"


def json_observer(out: IO[Any]) -> ILogObserver:
    """
    A C{twisted.logger} observer writing one JSON object per line to the
    text (or binary) file C{out}.
    """
    return FileLogObserver(out, format_json_line)


def twistd_logfile(argv: Sequence[str]) -> tuple[str | None, bool]:
    """
    Find twistd's C{--logfile} (or C{-l}) and whether C{-n}/C{--nodaemon}
    was given, among the options before the subcommand.

    @return: C{(path or None, nodaemon)}.
    """
    path = None
    nodaemon = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg.startswith("--logfile="):
            path = arg.split("=", 1)[1]
        elif arg in ("--logfile", "-l"):
            path = argv[i + 1] if i + 1 < len(argv) else None
            i += 1
        elif arg.startswith("-l") and not arg.startswith("--"):
            path = arg[2:]
        elif arg in ("-n", "--nodaemon") or (arg.startswith("-") and not arg.startswith("--") and "n" in arg[1:] and "l" not in arg[1:]):
            nodaemon = True
        elif not arg.startswith("-"):
            # The subcommand (p2ptracker, p2ppeer): its options are its own.
            break
        elif "=" not in arg and arg in _TWISTD_OPTIONS_WITH_VALUE:
            i += 1
        i += 1
    return path, nodaemon


#: twistd options that take a separate value (so it is not mistaken for
#: the subcommand).
_TWISTD_OPTIONS_WITH_VALUE = {
    "--pidfile", "-p", "--rundir", "-d", "--logger", "--reactor", "-r", "--umask", "--uid", "-u", "--gid",
    "-g", "--chroot", "--prefix", "--syslog-prefix", "--file", "-f", "--python", "-y", "--source", "-s",
    "--profile", "--profiler", "--euid",
}


def json_logger() -> ILogObserver:
    """
    The twistd C{--logger} factory: JSON lines to C{$P2P_LOG_FILE}, else to
    twistd's C{--logfile} (rotated like twistd's own log), else stdout under
    C{-n} or C{twistd.log} when daemonised.
    """
    path = os.environ.get("P2P_LOG_FILE") or None
    nodaemon = True
    if path is None:
        path, nodaemon = twistd_logfile(sys.argv[1:])
    if path == "-" or (path is None and nodaemon):
        return json_observer(sys.stdout)
    return json_observer(logfile.LogFile.fromFullPath(path or "twistd.log"))
