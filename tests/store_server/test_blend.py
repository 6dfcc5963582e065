"""Blending is pure: fairness by dwell, genre steering by preference members, merchant rules."""

from __future__ import annotations

import random
from collections import Counter

from store_server.blend import Member, Rules, blend, blend_genres, interleave, parse_rules, weight


def tracks(owner: str, n: int, **extra: object) -> tuple[dict, ...]:
    return tuple(
        {"id": f"{owner}:{i}", "title": f"t{i}", "artist": owner, "explicit": False, **extra}
        for i in range(n)
    )


def test_weight_grows_with_dwell_and_is_bounded():
    assert weight(0) == 1.0
    assert weight(-5) == 1.0
    assert weight(600) == 2.0
    assert weight(3600) == weight(99999) == 7.0


def test_interleave_shares_follow_weights_at_every_prefix():
    rng = random.Random(7)
    for _ in range(200):
        owners = [(f"o{i}", rng.uniform(1, 7), list(range(100))) for i in range(rng.randint(1, 5))]
        picks = interleave(owners, 60)
        total = sum(w for _, w, _ in owners)
        for n in range(1, len(picks) + 1):
            counts = Counter(o for o, _ in picks[:n])
            for o, w, _ in owners:
                # Smooth weighted round robin never strays more than one turn from the share.
                assert abs(counts[o] - n * w / total) <= 1.0 + 1e-9


def test_equal_dwell_alternates_and_longer_dwell_gets_more_turns():
    a = Member("aaa", "playlist", 0, tracks("a", 10))
    b = Member("bbb", "playlist", 0, tracks("b", 10))
    q = blend([a, b], Rules())
    assert [t["by"] for t in q["tracks"][:6]] == ["aaa", "bbb"] * 3
    long = Member("aaa", "playlist", 3600, tracks("a", 40))
    q = blend([long, b], Rules(), limit=16)
    counts = Counter(t["by"] for t in q["tracks"])
    assert counts["aaa"] == 14 and counts["bbb"] == 2  # 7 : 1


def test_same_room_same_queue_whatever_the_order():
    ms = [Member(p, "playlist", d, tracks(p, 5)) for p, d in (("x", 10), ("y", 900), ("z", 60))]
    assert blend(ms, Rules()) == blend(list(reversed(ms)), Rules())


def test_rules_filter_explicit_veto_and_cap_volume():
    t = (
        {"id": "1", "title": "a", "explicit": True},
        {"id": "2", "title": "b", "explicit": False},
        {"id": "3", "title": "c"},
    )
    m = Member("p", "playlist", 0, t)
    assert [x["id"] for x in blend([m], Rules())["tracks"]] == ["1", "2", "3"]
    q = blend([m], parse_rules({"explicit": False, "veto": ["3"], "volume_max": 150}))
    assert [x["id"] for x in q["tracks"]] == ["2"]
    assert q["volume_max"] == 100


def test_malformed_rules_never_stop_the_music():
    for raw in (None, [], "x", {"explicit": "no", "veto": "3", "volume_max": "loud"}):
        assert parse_rules(raw) == Rules()
    assert parse_rules({"veto": ["a", 3, None]}).veto == frozenset({"a"})
    assert parse_rules({"volume_max": True}).volume_max is None


def test_preference_members_steer_genres_without_adding_tracks():
    pref = Member("pref", "preferences", 0, genres={"rock": 3, "jazz": 1, "noise": -1})
    late = Member("late", "preferences", 600, genres={"jazz": 1})
    assert blend_genres([pref]) == {"rock": 0.75, "jazz": 0.25}
    # Weights 1 and 2: jazz = (1 * 0.25 + 2 * 1) / 3.
    assert blend_genres([pref, late]) == {"jazz": 0.75, "rock": 0.25}
    lister = Member(
        "list",
        "playlist",
        0,
        ({"id": "j", "genre": "jazz"}, {"id": "p", "genre": "pop"}, {"id": "r", "genre": "rock"}),
    )
    q = blend([lister, pref], Rules())
    assert [t["id"] for t in q["tracks"]] == ["r", "j", "p"]
    assert all(t["by"] == "list" for t in q["tracks"])
    assert "genre" not in q["tracks"][0]  # the player gets the same fields as a push


def test_scope_is_respected_inside_the_blend():
    # A playlist member's taste and a preferences member's tracks are never used.
    sneaky = Member("a", "preferences", 0, tracks=tracks("a", 3), genres={"pop": 1})
    lister = Member("b", "playlist", 0, tracks=tracks("b", 2), genres={"metal": 1})
    q = blend([sneaky, lister], Rules())
    assert {t["by"] for t in q["tracks"]} == {"b"}
    assert q["genres"] == {"pop": 1.0}


def test_shared_tracks_play_once_and_limit_holds():
    a = Member("a", "playlist", 0, tracks("s", 30))
    b = Member("b", "playlist", 0, tracks("s", 30))
    q = blend([a, b], Rules(), limit=20)
    ids = [t["id"] for t in q["tracks"]]
    assert len(ids) == len(set(ids)) == 20


def test_empty_room_gives_an_empty_queue():
    assert blend([], Rules(volume_max=40)) == {"tracks": [], "genres": {}, "volume_max": 40}
