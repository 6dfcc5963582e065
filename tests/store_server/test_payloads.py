"""Payloads carry exactly what the consent scope allows, under the merchant's pseudonym."""

from __future__ import annotations

import json

import pytest

from store_server.crypto import pseudonym
from store_server.payloads import push_payload, queue_payload, revoke_payload

pytestmark = pytest.mark.privacy

PLAYLISTS = [
    {
        "id": "pl:1",
        "title": "Mix",
        "owner_email": "ann@example.org",
        "tracks": [{"id": "t1", "title": "A", "artist": "X", "explicit": False, "isrc": "FR1"}],
    },
    {"id": "pl:2", "title": "Other", "tracks": []},
]
TASTE = {"genres": {"jazz": 0.7, "rock": 0.3}, "mood": "calm", "age": 41, "city": "Paris"}


def test_playlist_scope_gives_reference_title_and_tracks_only():
    body = push_payload("playlist", "pseudo", PLAYLISTS, TASTE, "chair-1", 123.0)
    assert body == {
        "type": "push",
        "scope": "playlist",
        "subscriber": "pseudo",
        "zone": "chair-1",
        "expires_at": 123.0,
        "playlist": {
            "ref": "pl:1",
            "title": "Mix",
            "tracks": [{"id": "t1", "title": "A", "artist": "X", "explicit": False}],
        },
    }


def test_preferences_scope_gives_the_taste_vector_only():
    body = push_payload("preferences", "pseudo", PLAYLISTS, TASTE, "cabin", 9.0)
    assert body["preferences"] == {"genres": {"jazz": 0.7, "rock": 0.3}, "mood": "calm"}
    assert "playlist" not in body
    assert "pl:1" not in json.dumps(body) and "Paris" not in json.dumps(body)


def test_unknown_scope_is_refused_and_empty_profiles_are_safe():
    with pytest.raises(ValueError, match="unknown scope"):
        push_payload("everything", "p", PLAYLISTS, TASTE, "z", 1.0)
    body = push_payload("playlist", "p", [], {}, "z", 1.0)
    assert body["playlist"] == {"ref": None, "title": "", "tracks": []}
    assert push_payload("preferences", "p", [], {}, "z", 1.0)["preferences"]["genres"] == {}


def test_pseudonyms_differ_per_merchant_and_hide_the_public_id():
    public_id = "6f1c0b7e-1111-4222-8333-444455556666"
    a, b = pseudonym(b"a" * 32, public_id), pseudonym(b"b" * 32, public_id)
    assert a != b and public_id not in a + b
    assert a == pseudonym(b"a" * 32, public_id)  # stable for one merchant


def test_revoke_and_queue_bodies():
    assert revoke_payload("p", "z", "absent") == {
        "type": "revoke",
        "subscriber": "p",
        "zone": "z",
        "reason": "absent",
    }
    q = queue_payload("z", ["b", "a"], {"tracks": []}, 1.0, 2.0)
    assert q["type"] == "queue" and q["members"] == ["a", "b"] and q["expires_at"] == 2.0
    assert "subscriber" not in q
