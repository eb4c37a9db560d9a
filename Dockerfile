# The twistedp2p tracker (and peer) image; compose.yml runs the tracker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app

# CI (.ci/run, through ./p2p) installs with: pip install -e '.[test]'
# The image installs the same project the same way minus the editable mode
# and the test extras: pip install .  (a regular install, so twistd finds
# the twisted/plugins entries).  Then build Twisted's plugin cache now, as
# root: the unprivileged user cannot write it into site-packages later.
RUN pip install . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin p2p \
    && mkdir /data && chown p2p /data

# The working directory is the one place the process may write (a tracker
# without --db keeps its SQLite index here; mount a volume to keep it).
WORKDIR /data
USER p2p
EXPOSE 9999

CMD ["twistd", "-n", "--pidfile=", "p2ptracker", "--no-shell", "--listen", "tcp:9999"]
