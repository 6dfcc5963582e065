"""A store server process that runs only the background jobs (exit sweeper, resolver refresh,
each venue's published radio drift and dark zones, retention rounds).

Web workers can then be scaled freely; the jobs take a Redis lock per round, so running this in
several places is safe too.
"""

from __future__ import annotations

import signal
import sys
import threading

from store_server import jobs
from store_server.config import ConfigError
from store_server.logs import configure
from wsgi import build_app


def main() -> int:
    """Run the jobs until SIGTERM or SIGINT; a bad setting is one line on stderr, exit 2."""
    try:
        app = build_app()
    except ConfigError as e:
        print(f"worker.py: {e}", file=sys.stderr)
        return 2
    configure(app.config["LOG_LEVEL"])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    jobs.start(app, stop)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
