"""A small PNG reader (non-interlaced greyscale, RGB, RGBA, palette) to grey numpy pixels, so QR
images can be handed to a real decoder without an imaging library."""

from __future__ import annotations

import struct
import zlib

import numpy as np

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=pos + 1).astype(np.int32)
        pos += stride + 1
        cur = np.zeros(stride, dtype=np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        else:
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def read_grey(data: bytes) -> np.ndarray:
    """Decode a PNG to an 8-bit greyscale array (height x width)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, palette = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert interlace == 0, "interlaced PNG"
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat += body
    channels = CHANNELS[ctype]
    bits = depth * channels
    stride = (width * bits + 7) // 8
    rows = _unfilter(zlib.decompress(idat), height, stride, max(1, bits // 8))
    if depth < 8:
        unpacked = np.unpackbits(rows, axis=1)[:, : width * depth]
        values = unpacked.reshape(height, width, depth) @ (1 << np.arange(depth)[::-1])
        samples = values.astype(np.uint8)
        if ctype == 0:
            return (samples * (255 // ((1 << depth) - 1))).astype(np.uint8)
    else:
        samples = rows.reshape(height, width, channels)
    if ctype == 3:
        rgb = palette[samples.reshape(height, width)]
        return rgb.mean(axis=2).astype(np.uint8)
    if ctype in (0, 4):
        return samples[..., 0] if samples.ndim == 3 else samples
    return samples[..., :3].mean(axis=2).astype(np.uint8)
