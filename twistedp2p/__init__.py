"""
twistedp2p: hybrid peer-to-peer file sharing on Twisted.

A tracker indexes who is online and what each peer publishes; the file bytes
move directly between peers.
"""

__version__ = "0.1.0"


def version_text() -> str:
    """
    What C{--version} prints: twistedp2p's version, then Twisted's and
    Python's.
    """
    import platform

    import twisted

    return f"twistedp2p {__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})"
