"""
The web dashboards of the tracker and the peer: a JSON API under
``/api/``, live updates by server-sent events, Prometheus metrics at
``/metrics`` and static pages (no build step, no CDN) at ``/``.

Each service gets one L{WebService} child when it runs with ``--web``:
see L{twistedp2p.web.tracker_site} and L{twistedp2p.web.peer_site}.  The
dashboards own no logic: every action calls the same registry or node
method as the admin shell or the peer shell.
"""
