"""
twistedp2p: hybrid peer-to-peer file sharing on Twisted.

A tracker indexes who is online and what each peer publishes; the file bytes
move directly between peers.
"""

__version__ = "0.1.0"
