"""Decode + edge-filter throughput on a realistic advert mix, one core.

Run: .venv/bin/python bench/frames.py [--adverts N] [--repeats R]
Prints one JSON object as its last line: frames_per_s is `programme_frame` (what the scanner runs on
every advert), decode_frames_per_s is the full `decode` of every advert, for comparison.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beacons.frames import (
    AltBeacon,
    EddystoneEID,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    ExposureNotification,
    IBeacon,
    decode,
    encode,
    programme_frame,
)
from store_server.cli import OneLineParser

LISTED = bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")

# Shares per 1,000 adverts, close to what a scanner in a shop hears: mostly phones' Apple
# Continuity and Microsoft CDP chatter, other vendors' beacons, Exposure Notification, a few EIDs.
MIX = {
    "apple_continuity": 350,
    "microsoft_cdp": 100,
    "random_manufacturer": 100,
    "ibeacon_other_uuid": 150,
    "exposure_notification": 120,
    "eddystone_other": 60,
    "altbeacon": 20,
    "eddystone_eid": 80,
    "ibeacon_listed": 20,
}


def _ad(ad_type: int, payload: bytes) -> bytes:
    return bytes([len(payload) + 1, ad_type]) + payload


def make_advert(kind: str, rng: random.Random) -> bytes:
    """One advert of the given kind with random content."""
    rb = rng.randbytes
    if kind == "apple_continuity":
        sub = rng.choice([0x10, 0x0C, 0x07, 0x0F, 0x09, 0x12])
        body = rb(rng.randint(3, 22))
        return _ad(0x01, b"\x1a") + _ad(0xFF, b"\x4c\x00" + bytes([sub, len(body)]) + body)
    if kind == "microsoft_cdp":
        return _ad(0xFF, b"\x06\x00\x01\x09\x20\x02" + rb(21))
    if kind == "random_manufacturer":
        tail = _ad(0x09, b"Tag") if rng.random() < 0.3 else b""
        return _ad(0x01, b"\x06") + _ad(0xFF, rb(rng.randint(3, 20))) + tail
    if kind == "ibeacon_other_uuid":
        return encode(IBeacon(rb(16), rng.getrandbits(16), rng.getrandbits(16), -59))
    if kind == "ibeacon_listed":
        return encode(IBeacon(LISTED, rng.getrandbits(16), rng.getrandbits(16), -59))
    if kind == "exposure_notification":
        return encode(ExposureNotification(rb(16), rb(4)))
    if kind == "altbeacon":
        return encode(AltBeacon(rb(20), -60, 0))
    if kind == "eddystone_eid":
        return encode(EddystoneEID(rb(8), -18))
    frame = rng.choice(
        [
            EddystoneUID(rb(10), rb(6), -20),
            EddystoneURL("https://example.com/x", -20),
            EddystoneTLM(3000, 5888, rng.getrandbits(20), rng.getrandbits(24)),
        ]
    )
    return encode(frame)


def build_mix(n: int, seed: int = 7) -> list[bytes]:
    """N adverts in MIX proportions, shuffled."""
    rng = random.Random(seed)
    total = sum(MIX.values())
    kinds = [k for k, share in MIX.items() for _ in range(round(n * share / total))]
    rng.shuffle(kinds)
    return [make_advert(k, rng) for k in kinds]


def rate(fn, adverts: list[bytes], repeats: int) -> float:
    """Best-of-R adverts per second for fn over the list."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(adverts)
        best = min(best, time.perf_counter() - t0)
    return len(adverts) / best


def main() -> None:
    """Build the mix, time the filter and the full decode, print the JSON result."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adverts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    adverts = build_mix(args.adverts)
    uuids = frozenset({LISTED})

    def run_filter(advs: list[bytes]) -> None:
        for a in advs:
            programme_frame(a, uuids)

    def run_decode(advs: list[bytes]) -> None:
        for a in advs:
            decode(a)

    kept = Counter(type(f).__name__ for a in adverts if (f := programme_frame(a, uuids)))
    decoded = Counter(getattr(decode(a), "type", "not_decodable") for a in adverts)
    result = {
        "frames_per_s": round(rate(run_filter, adverts, args.repeats)),
        "decode_frames_per_s": round(rate(run_decode, adverts, args.repeats)),
        "adverts": len(adverts),
        "repeats": args.repeats,
        "kept": dict(kept),
        "decoded_types": dict(decoded),
        "mix_per_1000": MIX,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
