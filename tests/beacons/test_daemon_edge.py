"""Edge filter: only programme frames pass, as address-free sightings in the wire format."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacons.edge import EdgeFilter, Sighting
from beacons.frames import (
    EddystoneEID,
    EddystoneUID,
    EddystoneURL,
    ExposureNotification,
    IBeacon,
    encode,
)
from beacons.sources import Advert

LISTED = uuid.UUID("f7826da6-4fa2-4e98-8024-bc5b71e0893e").bytes
OTHER = uuid.UUID("e2c56db5-dffb-48d2-b060-d0f5a71096e0").bytes
MAC = "5e:9a:01:02:03:04"


def _adv(data: bytes) -> Advert:
    return Advert(10.5, -67, MAC, data)


def test_eid_frames_become_sightings_without_the_address() -> None:
    s = EdgeFilter().sighting(_adv(encode(EddystoneEID(bytes.fromhex("df8e76bbfec4efc5"), -20))))
    assert s == Sighting(10.5, "eid", "df8e76bbfec4efc5", -67, -20)
    assert s.to_json() == {
        "ts": 10.5,
        "kind": "eid",
        "id": "df8e76bbfec4efc5",
        "rssi": -67,
        "tx_power": -20,
    }
    assert MAC not in repr(s) and MAC not in str(s.to_json())


def test_ibeacons_pass_only_when_their_uuid_is_listed() -> None:
    edge = EdgeFilter(frozenset({LISTED}))
    listed = _adv(encode(IBeacon(LISTED, 0x0102, 0xA0B0, -59)))
    assert edge.sighting(listed) == Sighting(
        10.5, "ibeacon", LISTED.hex() + "0102" + "a0b0", -67, -59
    )
    assert edge.sighting(_adv(encode(IBeacon(OTHER, 1, 2, -59)))) is None
    assert EdgeFilter().sighting(listed) is None  # nothing listed: no iBeacon at all


def test_every_other_frame_is_dropped() -> None:
    edge = EdgeFilter(frozenset({LISTED}))
    for frame in (
        EddystoneUID(bytes(10), bytes(6), -20),
        EddystoneURL("https://example.com", -20),
        ExposureNotification(bytes(16), bytes(4)),
    ):
        assert edge.sighting(_adv(encode(frame))) is None
    assert edge.sighting(_adv(b"")) is None


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_and_only_programme_frames_pass(data: bytes) -> None:
    s = EdgeFilter(frozenset({LISTED})).sighting(_adv(data))
    assert s is None or s.kind in ("eid", "ibeacon")
    if s is not None and s.kind == "ibeacon":
        assert s.id.startswith(LISTED.hex())


NAME = b"Carol's Pixel 7"
# what phones put beside a frame: flags, a Complete Local Name, other service and manufacturer data
AROUND = (
    bytes.fromhex("020106")
    + bytes([len(NAME) + 1, 0x09])
    + NAME
    + bytes.fromhex("06162cfe00c4b9" + "05ff4c001005")
)


@pytest.mark.parametrize(
    ("frame", "structure"),
    [
        (EddystoneEID(bytes.fromhex("df8e76bbfec4efc5"), -20), "0d16aafe30ecdf8e76bbfec4efc5"),
        (IBeacon(LISTED, 0x0102, 0xA0B0, -59), "1aff4c000215" + LISTED.hex() + "0102a0b0c5"),
    ],
)
def test_a_recorded_sighting_keeps_its_frame_and_nothing_else_of_the_advert(
    frame: EddystoneEID | IBeacon, structure: str
) -> None:
    edge = EdgeFilter(frozenset({LISTED}))
    for data in (AROUND + encode(frame), encode(frame)[3:] + AROUND):
        sighting = edge.sighting(_adv(data))
        assert sighting is not None
        recorded = sighting.to_advert()
        assert recorded == Advert(10.5, -67, "", bytes.fromhex(structure))
        assert NAME not in recorded.data and NAME.hex() not in recorded.data.hex()
        assert edge.sighting(recorded) == sighting  # a survey reads back what was sent


power, u16 = st.integers(-128, 127), st.integers(0, 0xFFFF)
programme_adverts = st.one_of(
    st.builds(EddystoneEID, st.binary(min_size=8, max_size=8), power).map(encode),
    st.builds(IBeacon, st.just(LISTED), u16, u16, power).map(encode),
    st.binary(max_size=64),
)


@given(programme_adverts, st.sampled_from([b"", AROUND]))
def test_a_recorded_sighting_reads_back_as_itself(data: bytes, around: bytes) -> None:
    edge = EdgeFilter(frozenset({LISTED}))
    s = edge.sighting(_adv(around + data))
    if s is not None:
        assert edge.sighting(s.to_advert()) == s
        assert s.to_advert().address == "" and NAME not in s.to_advert().data
