"""Provisioning documents: build, validate, serialise, QR codes, and the emitter driven by them."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from beacons import emitter, provisioning
from beacons.eid import compute_eid
from beacons.frames import EddystoneEID, decode
from beacons.provisioning import Provisioning, build, parse, qr_png, qr_svg, serialise, validate


def test_a_document_nested_past_the_recursion_limit_is_not_json() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        parse("[" * 100_000 + "]" * 100_000)


IK = bytes(range(16))
TIME_BASE = 1_767_225_600


def _doc(**overrides: object) -> dict:
    doc = {
        "version": 1,
        "identity_key": IK.hex(),
        "exponent": 10,
        "time_base": TIME_BASE,
        "resolver_id": "cm-paris-1",
        "emitter_id": "em-7f3a",
        "issued_at": TIME_BASE + 5,
    }
    doc.update(overrides)
    return doc


def test_build_validate_and_serialise_agree() -> None:
    p = build(IK, 10, TIME_BASE, "cm-paris-1", "em-7f3a", TIME_BASE + 5)
    assert p == validate(_doc())
    text = serialise(p)
    assert json.loads(text) == _doc()
    assert " " not in text
    assert list(json.loads(text)) == sorted(provisioning.FIELDS)
    assert parse(text) == p
    assert parse(text.encode()) == p


ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)


@settings(max_examples=100, deadline=None)
@given(
    st.binary(min_size=16, max_size=16),
    st.integers(0, 15),
    st.integers(0, 2**40),
    ids,
    ids,
    st.integers(0, 2**40),
)
def test_serialise_round_trips(
    ik: bytes, k: int, base: int, resolver: str, emitter_id: str, issued: int
) -> None:
    p = build(ik, k, base, resolver, emitter_id, issued)
    assert parse(serialise(p)) == p


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({k: v for k, v in _doc().items() if k != "exponent"}, "lacks exponent"),
        (_doc(extra=1), "unknown fields extra"),
        (_doc(version=2), "unsupported provisioning version 2"),
        (_doc(version=True), "version must be an integer"),
        (_doc(identity_key="00" * 15), "32 hex digits"),
        (_doc(identity_key="zz" * 16), "32 hex digits"),
        (_doc(identity_key=IK.hex().upper()), "lowercase"),
        (_doc(identity_key=123), "32 hex digits"),
        (_doc(exponent=16), "exponent must be between 0 and 15"),
        (_doc(exponent=1.0), "exponent must be an integer"),
        (_doc(time_base=-1), "time_base must be at least 0"),
        (_doc(resolver_id=""), "resolver_id must be 1 to 128"),
        (_doc(emitter_id="a b"), "emitter_id must be printable ASCII"),
        (_doc(emitter_id=7), "emitter_id must be a string"),
        (_doc(issued_at="now"), "issued_at must be an integer"),
    ],
)
def test_validate_says_what_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(doc)


def test_parse_rejects_broken_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse(b"\xff\xfe")


def test_build_rejects_a_short_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        build(IK[:8], 10, 0, "r", "e", 0)


def test_rotate_keeps_the_emitter_and_changes_the_key() -> None:
    p = validate(_doc())
    new_key = bytes(range(16, 32))
    q = provisioning.rotate(p, new_key, TIME_BASE + 100)
    assert (q.identity_key, q.issued_at) == (new_key, TIME_BASE + 100)
    assert (q.emitter_id, q.resolver_id, q.exponent, q.time_base) == (
        p.emitter_id,
        p.resolver_id,
        p.exponent,
        p.time_base,
    )


def test_new_identity_keys_are_random_16_bytes() -> None:
    a, b = provisioning.new_identity_key(), provisioning.new_identity_key()
    assert len(a) == 16 and a != b


def test_counter_is_seconds_since_the_time_base() -> None:
    p = validate(_doc())
    assert p.counter(TIME_BASE) == 0
    assert p.counter(TIME_BASE + 1500.9) == 1500
    with pytest.raises(ValueError, match="counter range"):
        p.counter(TIME_BASE - 1)
    with pytest.raises(ValueError, match="counter range"):
        p.counter(TIME_BASE + 2**32)


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    i = 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        body = data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks[kind] = chunks.get(kind, b"") + body
        i += 12 + length
    return chunks


def test_qr_codes_carry_the_serialised_document() -> None:
    p = validate(_doc())
    svg = qr_svg(p)
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    png = qr_png(p, scale=2)
    chunks = _png_chunks(png)
    assert b"IHDR" in chunks and b"IEND" in chunks
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    # same symbol segno builds for the canonical text: version and size agree with the PNG
    reference = segno.make(serialise(p), error="m", micro=False, boost_error=False)
    assert not reference.is_micro
    assert (width, height) == reference.symbol_size(scale=2)
    assert qr_png(p, scale=2) == png  # deterministic


def _png_modules(png: bytes) -> list[list[int]]:
    """Dark (1) / light (0) pixels of a 1-bit greyscale PNG with unfiltered rows."""
    chunks = _png_chunks(png)
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (1, 0)
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + (width + 7) // 8
    rows = []
    for y in range(height):
        row = raw[y * stride : (y + 1) * stride]
        assert row[0] == 0  # filter type "none"
        bits = [(row[1 + x // 8] >> (7 - x % 8)) & 1 for x in range(width)]
        rows.append([1 - b for b in bits])  # black pixels are 0 bits
    return rows


def test_png_pixels_are_the_symbol_of_the_serialised_document() -> None:
    p = validate(_doc())
    reference = segno.make(serialise(p), error="m", micro=False, boost_error=False)
    border = 4
    pixels = _png_modules(qr_png(p, scale=1))
    expected = [[0] * len(pixels[0]) for _ in range(len(pixels))]
    for y, row in enumerate(reference.matrix):
        for x, dark in enumerate(row):
            expected[y + border][x + border] = 1 if dark else 0
    assert pixels == expected
    other = validate(_doc(emitter_id="em-other"))
    assert _png_modules(qr_png(other, scale=1)) != pixels


# --- the reference emitter, driven by a document ------------------------------------------


def test_emitter_advertisement_at_a_unix_time() -> None:
    p = validate(_doc())
    adv = emitter.advertisement(p, TIME_BASE + 1024)
    frame = decode(adv)
    assert frame == EddystoneEID(bytes.fromhex("f7a6081d867e3474"), emitter.DEFAULT_TX_POWER)
    assert decode(emitter.advertisement(p, TIME_BASE + 65536.5)).eid.hex() == "ec31ae4cb8abc2d8"


def test_emitter_periods_are_consecutive_rotation_periods() -> None:
    p = validate(_doc())
    got = list(emitter.periods(p, 1500, 3, tx_power=-20))
    assert [x.t for x in got] == [1024, 2048, 3072]
    assert [x.unix_time for x in got] == [TIME_BASE + 1024, TIME_BASE + 2048, TIME_BASE + 3072]
    for x in got:
        assert x.eid == compute_eid(IK, 10, x.t)
        assert decode(x.adv) == EddystoneEID(x.eid, -20)
        assert x.to_json() == {
            "t": x.t,
            "unix_time": x.unix_time,
            "eid": x.eid.hex(),
            "adv": x.adv.hex(),
        }


def test_emitter_stops_at_the_end_of_the_counter() -> None:
    p = validate(_doc(exponent=15))
    assert [x.t for x in emitter.periods(p, 2**32 - 1, 5)] == [2**32 - 2**15]


def test_emitter_refuses_times_before_the_base() -> None:
    with pytest.raises(ValueError, match="counter range"):
        emitter.advertisement(validate(_doc()), TIME_BASE - 10)


def test_provisioning_is_a_frozen_value() -> None:
    p = validate(_doc())
    assert isinstance(p, Provisioning)
    with pytest.raises(AttributeError):
        p.exponent = 3  # type: ignore[misc]
