"""
Run the suite from a scratch directory: trial's ``TestCase.mktemp`` makes
paths relative to the working directory, which under pytest would otherwise
be the repository itself.
"""

import os

import pytest

# LAN tracker discovery (twistedp2p.discovery) stays on loopback for every
# tracker and peer the suite starts, in process or as a child process: no
# test sends a multicast datagram beyond this machine.
os.environ["P2P_DISCOVERY_INTERFACE"] = "127.0.0.1"


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory(tmp_path_factory):
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)
