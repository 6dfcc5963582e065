"""Reference merchant device: `python -m store_server.device_client --url URL --token TOKEN`.

Connects to the device namespace, prints every event it receives as one JSON line (the server's
hello, then pushes, revokes and blended queues, each once: a redelivered event, known by its
event id or, for pushes and revokes, by subscriber, zone and time, is acked but not printed
again) and acks it. Write `--token=TOKEN` when a token starts with a dash.

Exit status 0 when stopped (--count reached, --duration elapsed, SIGINT/SIGTERM), 1 when the
server is unreachable, refuses the token or drops the connection, 2 on bad arguments; failures
are one stderr line.

Three things every Python device must do, and this module does for tests and benchmarks too:
handle messages one at a time in arrival order (python-socketio otherwise runs each message
handler in its own thread, so a revoke could overtake the push it cancels), hold acks for
events replayed during the connect handshake until the namespace is connected, and accept a
long-polling response of more than 16 packets (a replay, where a proxy refuses websockets).

And one thing every device must do about time (`Playback`, which this CLI runs; the browser's
`merchant_portal/static/device.js` does the same): use a push or a blended queue only until its
`expires_at` (the consent's end, or the push's own lifetime, PUSH_TTL_S), even if no revoke
comes (the store server down at that moment, the device offline), and never use one that
arrives already expired (a device that slept while it was in transit). The queue also loses the
tracks of a member whose push expired. Expiry is judged on the device's clock, never later than
the server's: a clock found behind a server timestamp (a queue's `computed_at`) is advanced by
that much; a clock ahead only makes the device forget early. No grace is added, since a grace
would show a subscriber past the end of their consent. The CLI prints a push or queue that
arrives expired not at all (acked all the same) and `{"event": "expired", ...}` when it forgets
one.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import engineio
import socketio

from store_server.sio_json import allow_long_payloads

NAMESPACE = "/device"
CLOSE_WAIT_S = 0.2
EVENTS = ("event", "queue")


class _SerialEngineIO(engineio.Client):
    """An Engine.IO client that runs message handlers on its reader thread, in order."""

    def _trigger_event(self, event, *args, **kwargs):  # type: ignore[no-untyped-def]
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)

    def disconnect(self, abort: bool = False, reason: str | None = None) -> None:
        """Close the connection without waiting for a close frame that never comes."""
        ws = getattr(self, "ws", None)
        if ws is not None and self.current_transport == "websocket":
            # The server drops the socket on Engine.IO's close packet without answering the
            # websocket close frame, and websocket-client would wait 3 s for that answer.
            ws.close = functools.partial(ws.close, timeout=CLOSE_WAIT_S)
        return super().disconnect(abort=abort, reason=reason)


def occurrence_key(event: dict[str, Any]) -> str | None:
    """What identifies one push or revoke across redeliveries (which get new event ids)."""
    if event.get("type") not in ("push", "revoke") or event.get("at") is None:
        return None
    return f"{event['type']}|{event.get('subscriber')}|{event.get('zone')}|{event['at']}"


class SerialClient(socketio.Client):
    """A python-socketio client whose event handlers see events in the order the server sent
    them (handlers must not block on the server, e.g. with `call`)."""

    def _engineio_client_class(self):  # type: ignore[no-untyped-def]
        return _SerialEngineIO


Handler = Callable[[str, dict[str, Any], bool], None]


class DeviceConnection:
    """A device session: events in order, duplicates flagged by event id, acks sent (or held
    until connected). `handler(name, event, duplicate)` runs on the reader thread."""

    def __init__(self, url: str, token: str, handler: Handler, ack: bool = True) -> None:
        self.url, self.token, self.handler, self.ack = url, token, handler, ack
        allow_long_payloads()
        self.seen: set[str] = set()
        self.duplicates = 0
        self._held: list[str] = []
        self._unconfirmed = 0
        self._confirmed = threading.Condition()
        self.sio = SerialClient(reconnection=False)
        for name in EVENTS:
            self.sio.on(name, self._receiver(name), namespace=NAMESPACE)
        self.sio.on("connect", self._flush, namespace=NAMESPACE)

    def connect(self, timeout: float = 10.0, transports: list[str] | None = None) -> None:
        """Connect and authenticate; raises socketio.exceptions.ConnectionError if refused."""
        self.sio.connect(
            self.url,
            namespaces=[NAMESPACE],
            auth={"token": self.token},
            transports=transports,
            wait_timeout=timeout,
        )

    def _receiver(self, name: str) -> Callable[[dict[str, Any]], None]:
        def receive(event: dict[str, Any]) -> None:
            event_id = event.get("event_id")
            occurrence = occurrence_key(event)
            duplicate = event_id in self.seen or (
                occurrence is not None and occurrence in self.seen
            )
            self.duplicates += duplicate
            if isinstance(event_id, str):
                self.seen.add(event_id)
            if occurrence is not None:
                self.seen.add(occurrence)
            self.handler(name, event, duplicate)
            if self.ack and isinstance(event_id, str):
                self._ack(event_id)

        return receive

    def _ack(self, event_id: str) -> None:
        if NAMESPACE not in self.sio.namespaces:
            self._held.append(event_id)  # replayed inside the handshake: not connected yet
            return
        with self._confirmed:
            self._unconfirmed += 1
        self.sio.emit("ack", {"event_id": event_id}, namespace=NAMESPACE, callback=self._done)

    def _done(self, *_reply: Any) -> None:
        with self._confirmed:
            self._unconfirmed -= 1
            self._confirmed.notify_all()

    def _flush(self) -> None:
        held, self._held = self._held, []
        for event_id in held:
            self._ack(event_id)

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until the server confirmed every ack sent so far (the server handles messages
        concurrently, so only its answers prove an event left the outbox)."""
        with self._confirmed:
            return self._confirmed.wait_for(lambda: self._unconfirmed == 0, timeout)

    def sync(self, timeout: float = 10.0) -> None:
        """Return once everything the server sent before this call has been handled and every
        ack has been confirmed."""
        self.sio.call("ack", {"event_id": "0-0"}, namespace=NAMESPACE, timeout=timeout)
        if not self.settle(timeout):
            raise TimeoutError("acks not confirmed")

    def rotate(self, timeout: float = 10.0) -> str:
        """Ask for a new token over this connection; the old one stops working at once."""
        reply = self.sio.call("rotate_token", {}, namespace=NAMESPACE, timeout=timeout)
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise RuntimeError(f"token rotation refused: {reply}")
        self.token = reply["token"]
        return self.token

    def close(self, settle_s: float = 2.0) -> None:
        """Disconnect if connected, once the acks in flight are confirmed (or settle_s passed)."""
        if self.sio.connected:
            self.settle(settle_s)
            self.sio.disconnect()


class Playback:
    """What a device may use now: the pushes in force by pseudonym and the zone's blended queue,
    each forgotten at its `expires_at` (one timer, set to the earliest). Thread-safe; calls
    `on_expire(kind, event)` (kind "push" or "queue") from the timer's thread."""

    def __init__(
        self,
        on_expire: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.on_expire, self.clock = on_expire, clock
        self._lock = threading.Lock()
        self._pushes: dict[str, dict[str, Any]] = {}
        self._queue: dict[str, Any] | None = None
        self._gone: set[str] = set()  # members whose push expired, left out of the queue
        self._behind = 0.0  # how far the device clock was found behind the server's
        self._timer: threading.Timer | None = None

    def now(self) -> float:
        """The device's clock, advanced to the newest server timestamp it has seen."""
        return self.clock() + self._behind

    def apply(self, event: dict[str, Any]) -> bool:
        """Obey one push, revoke or queue; False for one that arrived expired (ignored)."""
        with self._lock:
            stamp = event.get("computed_at")
            if _number(stamp):
                self._behind = max(self._behind, stamp - self.clock())
            kind, who = event.get("type"), event.get("subscriber")
            expires = event.get("expires_at")
            if kind in ("push", "queue") and _number(expires) and expires <= self.now():
                if kind == "push" and who not in self._pushes:
                    self._gone.add(who)
                return False
            if kind == "push":
                self._pushes[who] = event
                self._gone.discard(who)
            elif kind == "revoke":
                self._pushes.pop(who, None)
            elif kind == "queue":
                self._queue = event
            self._schedule()
        return True

    @property
    def pushes(self) -> dict[str, dict[str, Any]]:
        """Pseudonym -> the push in force for them."""
        with self._lock:
            return dict(self._pushes)

    @property
    def queue(self) -> dict[str, Any] | None:
        """The blended queue in force, without the members (and their tracks) whose push
        expired; None when there is none."""
        with self._lock:
            q = self._queue
            if q is None:
                return None
            inner = q.get("queue") or {}
            tracks = [t for t in inner.get("tracks", []) if t.get("by") not in self._gone]
            return {
                **q,
                "members": [m for m in q.get("members", []) if m not in self._gone],
                "queue": {**inner, "tracks": tracks},
            }

    def close(self) -> None:
        """Cancel the expiry timer."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _schedule(self) -> None:
        """Under the lock: one timer, at the earliest expiry in force."""
        ends = [e["expires_at"] for e in self._held() if _number(e.get("expires_at"))]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ends:
            self._timer = threading.Timer(max(0.0, min(ends) - self.now()), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _held(self) -> Iterable[dict[str, Any]]:
        yield from self._pushes.values()
        if self._queue is not None:
            yield self._queue

    def _expire(self) -> None:
        forgotten: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            now = self.now()
            for who, push in list(self._pushes.items()):
                if _number(push.get("expires_at")) and push["expires_at"] <= now:
                    del self._pushes[who]
                    self._gone.add(who)
                    forgotten.append(("push", push))
            q = self._queue
            if q is not None and _number(q.get("expires_at")) and q["expires_at"] <= now:
                self._queue = None
                forgotten.append(("queue", q))
            self._schedule()
        if self.on_expire is not None:
            for kind, event in forgotten:
                self.on_expire(kind, event)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def refusal_reason(error: Exception, details: list[Any]) -> str:
    """A readable reason from a refused or failed connection."""
    for d in details:
        if isinstance(d, dict) and isinstance(d.get("data"), dict) and "reason" in d["data"]:
            return str(d["data"]["reason"])
        if isinstance(d, dict) and "message" in d:
            return str(d["message"])
        if isinstance(d, str) and d:
            return d
    return str(error) or type(error).__name__


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


class UsageError(Exception):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        # One stderr line for bad arguments rather than argparse's usage block.
        raise UsageError(message)


def _check_url(url: str) -> None:
    """Raise UsageError for a URL the client would fail on (with a traceback) when connecting."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its ValueError on a bad or out-of-range port
    except ValueError as e:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise UsageError(f"--url is not a valid URL: {e}") from None
    if not parts.hostname:
        raise UsageError("--url names no host")


def parser() -> argparse.ArgumentParser:
    """Command line of the reference device."""
    p = _Parser(
        prog="python -m store_server.device_client",
        description="Print (one JSON line each) and ack the events a merchant device receives.",
    )
    p.add_argument("--url", required=True, help="store server base URL, e.g. http://host:5000")
    p.add_argument("--token", required=True, help="device token issued at pairing")
    p.add_argument(
        "--count", type=int, default=0, help="stop after this many new events (hello aside)"
    )
    p.add_argument("--duration", type=_positive, default=None, help="stop after this many s")
    p.add_argument("--no-ack", action="store_true", help="print only; leave events pending")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the device until stopped; returns the exit status."""
    try:
        args = parser().parse_args(argv)
        if not args.url.startswith(("http://", "https://")):
            raise UsageError("--url must start with http:// or https://")
        _check_url(args.url)
        if args.count < 0:
            raise UsageError("--count must be >= 0")
    except UsageError as e:
        print(f"device_client: {e}", file=sys.stderr)
        return 2
    done, closed = threading.Event(), threading.Event()
    printed = 0

    def expired(kind: str, event: dict[str, Any]) -> None:
        about = {k: event[k] for k in ("subscriber", "zone", "event_id") if k in event}
        print(json.dumps({"event": "expired", "type": kind, **about}, sort_keys=True), flush=True)

    playback = Playback(on_expire=expired)

    def show(name: str, event: dict[str, Any], duplicate: bool) -> None:
        nonlocal printed
        if duplicate or not playback.apply(event):
            return  # arrived expired: acked, never used
        print(json.dumps({"event": name, **event}, sort_keys=True), flush=True)
        printed += 1
        if args.count and printed >= args.count:
            done.set()

    device = DeviceConnection(args.url, args.token, show, ack=not args.no_ack)
    device.sio.on(
        "hello",
        lambda data: print(json.dumps({"event": "hello", **data}, sort_keys=True), flush=True),
        namespace=NAMESPACE,
    )
    details: list[Any] = []
    device.sio.on("connect_error", lambda *d: details.extend(d), namespace=NAMESPACE)

    def on_disconnect(*_args: Any) -> None:
        closed.set()
        done.set()

    device.sio.on("disconnect", on_disconnect, namespace=NAMESPACE)
    try:
        device.connect()
    except (socketio.exceptions.ConnectionError, OSError) as e:
        print(f"device_client: cannot connect: {refusal_reason(e, details)}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not done.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
    if closed.is_set() and not (args.count and printed >= args.count):
        print("device_client: connection closed by the server", file=sys.stderr)
        return 1
    device.close(settle_s=5.0)
    playback.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
