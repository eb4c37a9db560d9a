"""
twistd plugins for twistedp2p: ``twistd p2ptracker`` and ``twistd p2ppeer``.

Kept import-light: twistd imports every plugin module to list them, so the
real code is loaded only when one of these services is made.
"""

from twisted.application.service import ServiceMaker

p2ptracker = ServiceMaker(
    "twistedp2p tracker",
    "twistedp2p.tracker.service",
    "Index of live peers and their published files (twistedp2p).",
    "p2ptracker",
)

p2ppeer = ServiceMaker(
    "twistedp2p peer",
    "twistedp2p.peer.service",
    "A peer that publishes, serves and fetches files (twistedp2p).",
    "p2ppeer",
)
