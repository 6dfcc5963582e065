"""parse_batch refuses a bad row with a message that names it, never with an exception of its
own (an integer too big for a float is out of range, not an OverflowError)."""

from __future__ import annotations

import math

import pytest

from store_server import ingest
from store_server.ingest import BadBatch

NOW = 1_795_000_000.0
EID = "0123456789abcdef"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ts": NOW, "kind": "eid", "id": EID, "rssi": math.nan}, "rssi must be a number"),
        ({"ts": math.nan, "kind": "eid", "id": EID, "rssi": -50}, "ts must be a number"),
        ({"ts": NOW, "kind": "eid", "id": EID, "rssi": True}, "rssi must be a number"),
        ({"ts": NOW, "kind": "eid", "id": "XYZ", "rssi": -50}, "id is not a valid eid"),
        ({"ts": NOW + 60, "kind": "eid", "id": EID, "rssi": -50}, "outside the accepted range"),
        ({"ts": 10**400, "kind": "eid", "id": EID, "rssi": -50}, "outside the accepted range"),
    ],
)
def test_refusals_name_the_row(row, message):
    good = {"ts": NOW, "kind": "eid", "id": EID, "rssi": -50}
    doc = {"batch_id": "b" * 16, "sightings": [good, good, row]}
    with pytest.raises(BadBatch, match=rf"sightings\[2\].*{message}"):
        ingest.parse_batch(doc, 1000, NOW, 5.0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ts": NOW, "kind": ["eid"], "id": EID, "rssi": -50}, "kind must be one of"),
        ({"ts": NOW, "kind": "eid", "id": {"x": 1}, "rssi": -50}, "id is not a valid eid"),
    ],
)
def test_an_unhashable_kind_or_id_is_refused_not_raised(row, message):
    doc = {"batch_id": "b" * 16, "sightings": [row]}
    with pytest.raises(BadBatch, match=rf"sightings\[0\].*{message}"):
        ingest.parse_batch(doc, 1000, NOW, 5.0)


def test_declared_power_rides_on_each_identifiers_first_sighting_and_is_optional():
    other = "fedcba9876543210"
    rows = [
        {"ts": NOW, "kind": "eid", "id": EID, "rssi": -50, "tx_power": -18},
        {"ts": NOW, "kind": "eid", "id": EID, "rssi": -51, "tx_power": -18},
        {"ts": NOW, "kind": "eid", "id": other, "rssi": -60},
    ]
    _, parsed = ingest.parse_batch({"batch_id": "b" * 16, "sightings": rows}, 1000, NOW, 5.0)
    assert [s.tx for s in parsed] == [-18.0, None, None]
    assert parsed[0] == ingest.Sighting(NOW, "eid", EID, -50.0, -18)
    # A calibration hint out of any radio's range, or of the wrong type, is ignored: the
    # sightings themselves are good and must not be lost over it.
    for bad in (True, math.nan, "-18", 21, -101, None, [1]):
        doc = {"batch_id": "b" * 16, "sightings": [{**rows[0], "tx_power": bad}]}
        _, parsed = ingest.parse_batch(doc, 1000, NOW, 5.0)
        assert parsed == [ingest.Sighting(NOW, "eid", EID, -50.0, None)]
