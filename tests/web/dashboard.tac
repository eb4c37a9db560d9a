# A twistd application for the browser tests while the services' --web
# option is not wired yet: `twistd -n -y tests/web/dashboard.tac` with
# P2P_WEB_TAC='{"role": "tracker"|"peer", "args": [...], "web": ENDPOINT,
# "token": TOKEN|null}' builds the real service from its real Options and
# adds the dashboard next to it.  Once p2ptracker/p2ppeer accept --web the
# tests run them directly instead.
import json
import os

from twisted.application import service
from twisted.internet import reactor

spec = json.loads(os.environ["P2P_WEB_TAC"])
if spec["role"] == "tracker":
    from twistedp2p.tracker.service import Options, makeService
    from twistedp2p.web.tracker_site import tracker_web_service as web_service
else:
    from twistedp2p.peer.service import Options, makeService
    from twistedp2p.web.peer_site import peer_web_service as web_service

config = Options()
config.parseOptions(spec["args"])
main = makeService(config, reactor)
application = service.Application("twistedp2p-" + spec["role"])
main.setServiceParent(application)
target = main.registry if spec["role"] == "tracker" else main.node
web_service(target, spec["web"], spec["token"], reactor).setServiceParent(application)
