"""What a scanner's backlog may disclose: past presences are recorded, never pushed."""

from __future__ import annotations

from store_server.ingest import STALE_S, disclosures
from store_server.presence import PresenceEvent

NOW = 1_800_000_000.0


def test_a_presence_long_over_is_not_disclosed_and_its_exit_not_revoked():
    old = NOW - 600
    state = {"p": {"zone": "chair-1", "since": old, "last": old + 9}}
    out = disclosures(state, False, [PresenceEvent("enter", "chair-1", old, old)], NOW)
    assert out == [(PresenceEvent("enter", "chair-1", old, old), False)]
    assert state["h"] is True
    exit_ = PresenceEvent("exit", "chair-1", old + 9, old, "moved")
    assert disclosures({"p": {}}, True, [exit_], NOW) == [(exit_, False)]


def test_a_backlog_presence_still_going_on_is_disclosed_now():
    old = NOW - 600
    state = {"p": {"zone": "chair-1", "since": old, "last": NOW - 1}}
    out = disclosures(state, False, [PresenceEvent("enter", "chair-1", old, old)], NOW)
    assert [(e.kind, e.at, d) for e, d in out] == [("enter", old, False), ("enter", NOW - 1, True)]
    assert state["h"] is False


def test_live_events_are_disclosed():
    e = PresenceEvent("enter", "cabin", NOW - STALE_S / 2, NOW - STALE_S / 2)
    state = {"p": {"zone": "cabin", "since": e.at, "last": e.at}}
    assert disclosures(state, False, [e], NOW) == [(e, True)]
    assert state["h"] is False
