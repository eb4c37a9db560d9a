"""
The twistedp2p benchmark: the tracker and the peers as real processes,
measured against baselines run in the same session on the same machine.

Run it as ``python -m bench`` (or ``./p2p bench``); ``docs/benchmarks.md``
describes every scenario and figure.
"""
