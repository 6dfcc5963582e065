"""Frame codecs: spec byte vectors, round trips, totality over arbitrary bytes, the edge filter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import frames
from beacons.frames import (
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    ExposureNotification,
    IBeacon,
    NotDecodable,
    decode,
    encode,
    encode_url,
    iter_ad,
    programme_ad,
    programme_frame,
)

FLAGS = "020106"
EDDY_LIST = "0303aafe"  # complete list of 16-bit service UUIDs: 0xFEAA

# Vectors assembled field by field from the public specs, not from our encoder.
IBEACON_HEX = (
    FLAGS + "1aff" + "4c00" + "0215" + "e2c56db5dffb48d2b060d0f5a71096e0" + "0001" + "0002" + "c5"
)
ALTBEACON_HEX = "1bff" + "1801" + "beac" + "2f234454cf6d4a0fadf2f4911ba9ffa600010002" + "c5" + "00"
UID_HEX = FLAGS + EDDY_LIST + "1516aafe" + "00" + "ee" + "00010203040506070809" + "0a0b0c0d0e0f"
URL_HEX = FLAGS + EDDY_LIST + "0e16aafe" + "10" + "f0" + "01" + "6578616d706c65" + "00"
TLM0_HEX = FLAGS + EDDY_LIST + "1116aafe" + "20" + "00" + "0bb8" + "1780" + "00000100" + "00002710"
TLM1_HEX = FLAGS + EDDY_LIST + "1516aafe2001" + "000102030405060708090a0b" + "1234" + "abcd"
EID_HEX = FLAGS + EDDY_LIST + "0d16aafe" + "30" + "ee" + "0011223344556677"
EN_HEX = "02011a" + "03036ffd" + "17166ffd" + "000102030405060708090a0b0c0d0e0f" + "40080000"

VECTORS = [
    (
        IBEACON_HEX,
        {
            "type": "ibeacon",
            "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
            "major": 1,
            "minor": 2,
            "tx_power": -59,
        },
    ),
    (
        ALTBEACON_HEX,
        {
            "type": "altbeacon",
            "beacon_id": "2f234454cf6d4a0fadf2f4911ba9ffa600010002",
            "tx_power": -59,
            "mfg_reserved": 0,
        },
    ),
    (
        UID_HEX,
        {
            "type": "eddystone_uid",
            "namespace": "00010203040506070809",
            "instance": "0a0b0c0d0e0f",
            "tx_power": -18,
        },
    ),
    (UID_HEX.replace("1516aafe", "1716aafe") + "0000", None),  # with the two RFU bytes: same frame
    (URL_HEX, {"type": "eddystone_url", "url": "https://www.example.com/", "tx_power": -16}),
    (
        TLM0_HEX,
        {
            "type": "eddystone_tlm",
            "battery_mv": 3000,
            "temperature_c": 23.5,
            "adv_count": 256,
            "uptime_s": 1000.0,
        },
    ),
    (
        TLM1_HEX,
        {"type": "eddystone_tlm", "etlm": "000102030405060708090a0b", "salt": 4660, "mic": 43981},
    ),
    (EID_HEX, {"type": "eddystone_eid", "eid": "0011223344556677", "tx_power": -18}),
    (
        EN_HEX,
        {
            "type": "exposure_notification",
            "rpi": "000102030405060708090a0b0c0d0e0f",
            "aem": "40080000",
        },
    ),
]


@pytest.mark.parametrize(("hex_adv", "expected"), VECTORS)
def test_spec_vectors_decode_to_the_cli_json(hex_adv: str, expected: dict | None) -> None:
    got = decode(bytes.fromhex(hex_adv)).to_json()
    if expected is None:  # the UID variant with RFU bytes
        expected = decode(bytes.fromhex(UID_HEX)).to_json()
    assert got == expected
    assert got["type"] in frames.FRAME_TYPES
    json.dumps(got)  # JSON-ready: no bytes, no custom types


def test_altbeacon_keeps_the_advertiser_company_id() -> None:
    frame = decode(bytes.fromhex(ALTBEACON_HEX))
    assert isinstance(frame, AltBeacon)
    assert frame.company_id == 0x0118


def test_tlm_negative_temperature_and_odd_tenths() -> None:
    fields = "0000" + "ff80" + "00000000" + "0000007b"  # 0 mV, -0.5 C, 0 adverts, 12.3 s
    adv = bytes.fromhex(FLAGS + EDDY_LIST + "1116aafe2000" + fields)
    assert decode(adv).to_json() == {
        "type": "eddystone_tlm",
        "battery_mv": 0,
        "temperature_c": -0.5,
        "adv_count": 0,
        "uptime_s": 12.3,
    }


@pytest.mark.parametrize(
    ("scheme", "body", "url"),
    [
        ("00", "676f6f676c65" + "07", "http://www.google.com"),
        ("02", "61" + "01" + "62", "http://a.org/b"),
        ("03", "78" + "0d", "https://x.gov"),
        ("02", "79" + "04" + "7a" + "0b", "http://y.info/z.info"),
    ],
)
def test_url_schemes_and_expansion_codes(scheme: str, body: str, url: str) -> None:
    data = "aafe10f0" + scheme + body
    adv = bytes.fromhex(f"{len(data) // 2 + 1:02x}16" + data)
    assert decode(adv) == EddystoneURL(url, -16)


def test_url_encoding_uses_the_longest_expansion() -> None:
    assert encode_url("https://www.example.com/") == bytes.fromhex("01") + b"example" + b"\x00"
    assert encode_url("http://a.com.b") == bytes.fromhex("02") + b"a" + b"\x07" + b".b"


@pytest.mark.parametrize(
    ("hex_adv", "reason_part"),
    [
        ("", "empty"),
        ("0201", "runs past the end"),
        (EID_HEX[:-2], "runs past the end"),
        (FLAGS, "no known frame"),
        (FLAGS + "0cff" + "4c00" + "10" + "0511223344556677", "no known frame"),  # Apple nearby
        (FLAGS + "19ff4c000215" + "00" * 20, "ibeacon"),  # one byte short
        (FLAGS + "0e16aafe30ee" + "00" * 9, "eddystone eid"),  # one byte long
        (FLAGS + "0416aafe40", "unknown frame type"),
        (FLAGS + "0316aafe", "no frame type"),
        (FLAGS + "0616aafe10f004", "unknown scheme"),
        (FLAGS + "0716aafe10f00220", "reserved byte"),
        (FLAGS + "0716aafe10f002ff", "reserved byte"),
        (FLAGS + "1816aafe10f002" + "61" * 18, "longer than 17"),
        (FLAGS + "0516aafe2002", "unknown version"),
        (FLAGS + "0c16aafe2000" + "00" * 7, "tlm v0"),
        (FLAGS + "1616aafe2001" + "00" * 17, "tlm v1"),
        (FLAGS + "16166ffd" + "00" * 19, "exposure notification"),
    ],
)
def test_malformed_input_is_not_decodable_with_a_reason(hex_adv: str, reason_part: str) -> None:
    got = decode(bytes.fromhex(hex_adv))
    assert isinstance(got, NotDecodable)
    assert reason_part in got.reason


def test_non_bytes_input_is_not_decodable() -> None:
    assert isinstance(decode("0201"), NotDecodable)  # type: ignore[arg-type]
    assert decode(bytearray.fromhex(EID_HEX)) == decode(bytes.fromhex(EID_HEX))


def test_zero_length_ends_the_significant_part() -> None:
    assert decode(bytes.fromhex(EID_HEX + "00" + "ffffff")) == decode(bytes.fromhex(EID_HEX))


def test_tx_power_level_ad_structure_is_not_the_frame_power() -> None:
    adv = bytes.fromhex("020a04" + IBEACON_HEX)  # TX Power Level AD says +4 dBm
    assert decode(adv).to_json()["tx_power"] == -59


def test_priority_eid_then_ibeacon_then_the_rest() -> None:
    ibeacon = bytes.fromhex(IBEACON_HEX[6:])  # without flags
    eid = bytes.fromhex(EID_HEX[6 + 8 :])
    en = bytes.fromhex(EN_HEX[14:])
    tlm = bytes.fromhex(TLM0_HEX[14:])
    assert decode(en + ibeacon + eid).type == "eddystone_eid"
    assert decode(en + tlm + ibeacon).type == "ibeacon"
    assert decode(en + tlm).type == "eddystone_tlm"
    assert decode(bytes.fromhex(ALTBEACON_HEX) + bytes.fromhex(UID_HEX)).type == "altbeacon"
    # a frame beats a broken structure's reason, wherever it comes
    broken = bytes.fromhex("0416aafe40")
    assert decode(broken + en).type == "exposure_notification"


def test_iter_ad_yields_well_formed_structures() -> None:
    assert list(iter_ad(bytes.fromhex("020106" + "03ff0102" + "05"))) == [
        (0x01, b"\x06"),
        (0xFF, b"\x01\x02"),
    ]


# --- round trips ---------------------------------------------------------------------------

s8 = st.integers(-128, 127)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def _url_from_encoded(scheme: int, body: list[int]) -> str:
    return frames.URL_SCHEMES[scheme] + "".join(
        frames.URL_EXPANSIONS[b] if b < len(frames.URL_EXPANSIONS) else chr(b) for b in body
    )


url_bytes = st.one_of(st.integers(0, 0x0D), st.integers(0x21, 0x7E))
urls = st.builds(_url_from_encoded, st.integers(0, 3), st.lists(url_bytes, max_size=17))

frame_strategies = {
    "ibeacon": st.builds(IBeacon, st.binary(min_size=16, max_size=16), u16, u16, s8),
    "altbeacon": st.builds(
        AltBeacon, st.binary(min_size=20, max_size=20), s8, st.integers(0, 255), u16
    ),
    "eddystone_uid": st.builds(
        EddystoneUID, st.binary(min_size=10, max_size=10), st.binary(min_size=6, max_size=6), s8
    ),
    "eddystone_url": st.builds(EddystoneURL, urls, s8),
    "eddystone_tlm": st.one_of(
        st.builds(EddystoneTLM, u16, st.integers(-0x8000, 0x7FFF), u32, u32),
        st.builds(EddystoneETLM, st.binary(min_size=12, max_size=12), u16, u16),
    ),
    "eddystone_eid": st.builds(EddystoneEID, st.binary(min_size=8, max_size=8), s8),
    "exposure_notification": st.builds(
        ExposureNotification, st.binary(min_size=16, max_size=16), st.binary(min_size=4, max_size=4)
    ),
}
any_frame = st.one_of(*frame_strategies.values())


@pytest.mark.parametrize("kind", sorted(frame_strategies))
def test_round_trip_per_frame_type(kind: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(frame_strategies[kind])
    def check(frame: frames.Frame) -> None:
        adv = encode(frame)
        assert len(adv) <= 31  # fits one legacy advertisement
        assert decode(adv) == frame
        assert frame.type == kind
        assert json.loads(json.dumps(frame.to_json()))["type"] == kind

    check()


@settings(max_examples=300, deadline=None)
@given(urls)
def test_any_encodable_url_fits_17_bytes(url: str) -> None:
    assert len(encode_url(url)) - 1 <= frames.URL_MAX_ENCODED


# --- totality ------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64))
def test_decode_is_total_over_arbitrary_bytes(adv: bytes) -> None:
    got = decode(adv)
    assert isinstance(got, NotDecodable) or got.type in frames.FRAME_TYPES


@settings(max_examples=600, deadline=None)
@given(any_frame, st.data())
def test_decode_is_total_over_mutated_frames(frame: frames.Frame, data: st.DataObject) -> None:
    adv = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(adv) - 1))
        adv[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(adv)))
    got = decode(bytes(adv[:cut]))
    assert isinstance(got, NotDecodable) or got.type in frames.FRAME_TYPES
    if not isinstance(got, NotDecodable):
        json.dumps(got.to_json())


def test_decode_of_a_long_chain_of_structures_is_fast() -> None:
    # 30,000 one-byte structures: linear time, no recursion
    assert decode(b"\x01\x09" * 30_000) == NotDecodable("no known frame")


# --- encode validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (EddystoneEID(b"\x00" * 7, 0), "eid must be 8 bytes"),
        (EddystoneEID(b"\x00" * 8, 128), "tx_power"),
        (IBeacon(b"\x00" * 16, 65536, 0, 0), "major"),
        (IBeacon(b"\x00" * 15, 0, 0, 0), "uuid"),
        (AltBeacon(b"\x00" * 20, 0, 256), "mfg_reserved"),
        (EddystoneUID(b"\x00" * 10, b"\x00" * 5, 0), "instance"),
        (EddystoneURL("ftp://x", 0), "must start with"),
        (EddystoneURL("https://a b", 0), "cannot be encoded"),
        (EddystoneURL("https://é", 0), "cannot be encoded"),
        (EddystoneURL("https://" + "a" * 18, 0), "at most 17"),
        (EddystoneTLM(0, 0x8000, 0, 0), "temperature_raw"),
        (EddystoneTLM(0, 0, -1, 0), "adv_count"),
        (EddystoneETLM(b"\x00" * 12, 0, 1 << 16), "mic"),
        (ExposureNotification(b"\x00" * 16, b"\x00" * 3), "aem"),
    ],
)
def test_encode_rejects_invalid_values(frame: frames.Frame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(frame)


def test_encode_rejects_non_frames() -> None:
    with pytest.raises(TypeError):
        encode(NotDecodable("x"))  # type: ignore[arg-type]


def test_url_at_the_17_byte_limit_encodes() -> None:
    url = "https://" + "a" * 16 + ".com/"
    assert decode(encode(EddystoneURL(url, -20))) == EddystoneURL(url, -20)


# --- edge filter ---------------------------------------------------------------------------

LISTED = bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")


def _reference_filter(adv: bytes, uuids: frozenset[bytes]) -> frames.Frame | None:
    got = decode(adv)
    if isinstance(got, EddystoneEID) or (isinstance(got, IBeacon) and got.uuid in uuids):
        return got
    return None


def test_programme_frame_keeps_eids_and_listed_ibeacons_only() -> None:
    uuids = frozenset({LISTED})
    assert programme_frame(bytes.fromhex(EID_HEX), uuids) == decode(bytes.fromhex(EID_HEX))
    assert programme_frame(bytes.fromhex(IBEACON_HEX), uuids) == decode(bytes.fromhex(IBEACON_HEX))
    assert programme_frame(bytes.fromhex(IBEACON_HEX), frozenset()) is None
    other = IBeacon(b"\x11" * 16, 1, 1, -59)
    assert programme_frame(encode(other), uuids) is None
    for hex_adv in (ALTBEACON_HEX, UID_HEX, URL_HEX, TLM0_HEX, TLM1_HEX, EN_HEX):
        assert programme_frame(bytes.fromhex(hex_adv), uuids) is None


def test_programme_frame_rejects_the_pattern_inside_other_data() -> None:
    # "aa fe 30" and "4c 00 02 15" buried in manufacturer data are not frames
    adv = bytes.fromhex(FLAGS + "0cff" + "0600" + "aafe30" + "4c000215" + "0102")
    assert programme_frame(adv, frozenset({LISTED})) is None


programme_ish = st.one_of(
    frame_strategies["eddystone_eid"].map(encode),
    st.builds(IBeacon, st.sampled_from([LISTED, b"\x22" * 16]), u16, u16, s8).map(encode),
    any_frame.map(encode),
    st.binary(max_size=40),
)


@settings(max_examples=800, deadline=None)
@given(st.lists(programme_ish, min_size=1, max_size=3).map(b"".join), st.integers(0, 70))
def test_programme_frame_agrees_with_decode(adv: bytes, cut: int) -> None:
    uuids = frozenset({LISTED})
    for candidate in (adv, adv[:cut]):
        assert programme_frame(candidate, uuids) == _reference_filter(candidate, uuids)


# --- what a capture keeps of an advert ------------------------------------------------------

NAME_AD = "10" + "09" + b"Carol's Pixel 7".hex()  # Complete Local Name
FAST_PAIR_AD = "0616" + "2cfe" + "00c4b9"  # service data of another 16-bit UUID
CONTINUITY_AD = "05ff" + "4c00" + "1005"  # Apple manufacturer data that is no iBeacon


def test_programme_ad_is_the_frames_own_structure_without_flags() -> None:
    eid = decode(bytes.fromhex(EID_HEX))
    ibeacon = decode(bytes.fromhex(IBEACON_HEX))
    assert isinstance(eid, EddystoneEID) and isinstance(ibeacon, IBeacon)
    assert programme_ad(eid).hex() == "0d16aafe" + "30" + "ee" + "0011223344556677"
    assert programme_ad(ibeacon).hex() == IBEACON_HEX.removeprefix(FLAGS)
    assert decode(programme_ad(eid)) == eid
    assert programme_frame(programme_ad(ibeacon), frozenset({LISTED})) == ibeacon
    with pytest.raises(TypeError):
        programme_ad(EddystoneURL("https://example.com", -20))  # type: ignore[arg-type]


others = st.sampled_from([NAME_AD, FAST_PAIR_AD, CONTINUITY_AD, FLAGS, EDDY_LIST]).map(
    bytes.fromhex
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(programme_ish, others), min_size=1, max_size=5).map(b"".join))
def test_programme_ad_is_one_structure_heard_and_decodes_alone(adv: bytes) -> None:
    uuids = frozenset({LISTED})
    frame = programme_frame(adv, uuids)
    if frame is None:
        return
    kept = programme_ad(frame)
    heard = [bytes([len(p) + 1, t]) + p for t, p in iter_ad(adv)]
    assert kept in heard  # the very bytes received, not a re-encoding that could differ
    assert programme_frame(kept, uuids) == frame
