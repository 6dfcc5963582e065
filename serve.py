"""Production web process: the store server and the portal on HOST:PORT.

SOCKETIO_ASYNC_MODE=gevent (the production choice, measured in the README) serves with gevent's
WSGI server after monkey patching, which must happen before anything else is imported;
`threading` serves with Werkzeug's threaded server. Background jobs run in `worker.py`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

if os.environ.get("SOCKETIO_ASYNC_MODE") == "gevent":
    from gevent import monkey

    monkey.patch_all()


def gevent_server(host: str, port: int, app: Any) -> Any:
    """gevent's WSGI server, replying without Nagle's delay: pywsgi writes a response's headers
    and body separately, and the body would otherwise wait for the client's delayed ACK (40 ms
    on Linux) on every keep-alive request."""
    import socket

    from gevent.pywsgi import WSGIServer

    class NoDelayServer(WSGIServer):
        def handle(self, sock: Any, address: Any) -> None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    return NoDelayServer((host, port), app, log=None)


def start_up(gen0: int | None = None) -> None:
    """What a worker does after building its app and before it listens (serve.py, and the
    benchmarks' servers through this function): compile the positioning kernels (loading them
    from numba's cache takes a few hundred ms, which would otherwise stall the first sighting
    batch and every request behind it), then keep start-up objects out of the collector."""
    from store_server.positioning import kernels

    kernels.warm()
    tune_gc(gen0)


def gc_threshold() -> int:
    """GC_GEN0_THRESHOLD from the environment (default 50,000); raises ConfigError."""
    from store_server.config import env_int

    return env_int(os.environ, "GC_GEN0_THRESHOLD", 50_000, 1, what="a number of allocations")


def tune_gc(gen0: int | None = None) -> None:
    """Keep the cyclic garbage collector out of the push latency tail.

    With thousands of websocket clients the heap holds about a million objects, and CPython's
    default young-generation threshold (700 allocations) led to full collections of 40-250 ms
    every few seconds: the push p99 at 100 pushes/s and 2,000 devices was 167 ms for a 12 ms
    p50 (bench/push_latency.py). What exists after start-up (modules, models) is frozen out of
    collection for good, and young collections run every GC_GEN0_THRESHOLD allocations (default
    50,000, or `gen0`); reference counting still frees everything without cycles at once.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(gc_threshold() if gen0 is None else gen0, 10, 10)


def main() -> int:
    """Serve until interrupted; a bad setting is one line on stderr and exit status 2."""
    from store_server.config import ConfigError, env_int
    from wsgi import build_app

    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = env_int(os.environ, "PORT", 8000, 1, 65535, "a TCP port number")
        gen0 = gc_threshold()
        app = build_app()
    except ConfigError as e:
        print(f"serve.py: {e}", file=sys.stderr)
        return 2
    mode = app.config["SOCKETIO_ASYNC_MODE"]
    start_up(gen0)
    if mode == "gevent":
        server = gevent_server(host, port, app)
        server.start()
    else:
        from werkzeug.serving import make_server

        server = make_server(host, port, app, threaded=True)
    exit_on_sigterm()
    # Supervisors and tests wait for this line rather than polling the port.
    print(f"serving http://{host}:{port} ({mode})", flush=True)
    server.serve_forever()
    return 0


def exit_on_sigterm() -> None:
    """Let SIGTERM (docker stop, supervisors, tests) end the process as Ctrl-C does, through exit
    hooks: an embedded Redis (make demo) would otherwise outlive its server."""
    import signal

    def _exit(*_args: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


if __name__ == "__main__":
    sys.exit(main())
