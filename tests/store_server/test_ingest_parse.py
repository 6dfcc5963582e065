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
