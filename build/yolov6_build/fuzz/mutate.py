"""Mutations of encoded images: generic byte damage plus structure-aware edits of the fields decoders
trust (sizes, segment and chunk lengths, sampling factors, tables), each format parsed just enough.

``mutate(data, family, rng)`` -> (mutant bytes, a short description of what was done). PNG edits keep
chunk CRCs valid and can rewrite the compressed pixel stream, so they reach past libpng's CRC check.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..inputs import jpeg_segments

INTERESTING = (0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 257, 4095, 4096, 32767, 32768,
               65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1)


@dataclass(frozen=True)
class Field:
    """An integer the decoder reads: ``size`` bytes at ``offset``, ``order`` 'big' or 'little'."""
    offset: int
    size: int
    order: str = "big"
    name: str = ""


def jpeg_fields(data: bytes) -> list[Field]:
    fields = []
    for marker, at, _ in jpeg_segments(data):
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        fields.append(Field(at + 2, 2, name=f"len {marker:02X}"))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            fields += [Field(at + 4, 1, name="precision"), Field(at + 5, 2, name="height"),
                       Field(at + 7, 2, name="width"), Field(at + 9, 1, name="components")]
            for c in range(min(data[at + 9] if at + 9 < len(data) else 0, 4)):
                fields += [Field(at + 10 + 3 * c + k, 1, name=f"sof comp{c}.{k}") for k in range(3)]
        elif marker == 0xDA:  # SOS
            count = data[at + 4] if at + 4 < len(data) else 0
            fields += [Field(at + 4, 1, name="scan components")]
            fields += [Field(at + 5 + i, 1, name="scan params") for i in range(min(2 * count + 3, 11))]
        elif marker == 0xDD:
            fields.append(Field(at + 4, 2, name="restart interval"))
        elif marker in (0xDB, 0xC4):  # DQT / DHT: table ids and counts
            fields += [Field(at + 4 + i, 1, name=f"table {marker:02X}") for i in range(17)]
    return [f for f in fields if f.offset + f.size <= len(data)]


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, payload) of each chunk."""
    out, at = [], 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        out.append((at, data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return out


def png_fields(data: bytes) -> list[Field]:
    fields = []
    for at, kind, _ in png_chunks(data):
        fields.append(Field(at, 4, name=f"len {kind!r}"))
        if kind == b"IHDR":
            fields += [Field(at + 8, 4, name="width"), Field(at + 12, 4, name="height")]
            fields += [Field(at + 16 + i, 1, name=n) for i, n in enumerate(("depth", "colour", "compr", "filter", "interlace"))]
    return fields


def bmp_fields(data: bytes) -> list[Field]:
    layout = ((2, 4), (10, 4), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2), (30, 4), (34, 4), (46, 4), (50, 4))
    return [Field(o, s, "little", "bmp") for o, s in layout if o + s <= len(data)]


def tiff_fields(data: bytes) -> list[Field]:
    order = "little" if data[:2] == b"II" else "big"
    fields = [Field(4, 4, order, "ifd offset")]
    ifd = int.from_bytes(data[4:8], order)
    if ifd + 2 > len(data):
        return fields
    count = int.from_bytes(data[ifd:ifd + 2], order)
    fields.append(Field(ifd, 2, order, "entries"))
    for i in range(min(count, 40)):
        at = ifd + 2 + 12 * i
        fields += [Field(at + 2, 2, order, "type"), Field(at + 4, 4, order, "count"), Field(at + 8, 4, order, "value"),
                   Field(at + 8, 2, order, "short value")]
    return [f for f in fields if f.offset + f.size <= len(data)]


def jpeg2000_fields(data: bytes) -> list[Field]:
    fields = []
    if data[:4] == b"\x00\x00\x00\x0c":  # JP2 boxes
        at = 0
        while at + 8 <= len(data):
            fields.append(Field(at, 4, name="box length"))
            length = int.from_bytes(data[at:at + 4], "big")
            if data[at + 4:at + 8] in (b"jp2h",):
                at += 8
                continue
            if length < 8:
                break
            at += length
    siz = data.find(b"\xff\x51")
    if siz >= 0:  # Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz, then Ssiz XRsiz YRsiz per component
        at, sizes = siz + 2, (2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 2) + (1, 1, 1) * 3
        for size in sizes:
            fields.append(Field(at, size, name="siz"))
            at += size
    for marker in (b"\xff\x52", b"\xff\x5c", b"\xff\x90"):  # COD, QCD, SOT
        at = data.find(marker)
        if at >= 0:
            fields += [Field(at + 2 + i, 1, name=f"marker {marker.hex()}") for i in range(12)]
    return [f for f in fields if f.offset + f.size <= len(data)]


def webp_fields(data: bytes) -> list[Field]:
    fields = [Field(4, 4, "little", "riff size"), Field(16, 4, "little", "chunk size")]
    if data[12:16] == b"VP8 ":
        fields += [Field(26, 2, "little", "width"), Field(28, 2, "little", "height"), Field(20, 3, "little", "frame tag")]
    elif data[12:16] == b"VP8L":
        fields += [Field(21, 4, "little", "size bits")]
    return [f for f in fields if f.offset + f.size <= len(data)]


def pnm_fields(data: bytes) -> list[Field]:
    return []  # a text header: mutated by _pnm_header


FIELDS = {"jpeg": jpeg_fields, "png": png_fields, "bmp": bmp_fields, "tiff": tiff_fields,
          "jpeg2000": jpeg2000_fields, "webp": webp_fields, "pnm": pnm_fields}


def _set_field(data: bytearray, field: Field, rng: np.random.Generator) -> str:
    old = int.from_bytes(data[field.offset:field.offset + field.size], field.order)
    top = 2 ** (8 * field.size) - 1
    choice = int(rng.integers(0, 4))
    if choice == 0:
        value = int(INTERESTING[int(rng.integers(0, len(INTERESTING)))])
    elif choice == 1:
        value = old + int(rng.integers(-3, 4))
    elif choice == 2:
        value = old * 2 ** int(rng.integers(1, 9)) if rng.integers(0, 2) else old >> int(rng.integers(1, 9))
    else:
        value = int(rng.integers(0, top + 1, dtype=np.uint64))
    value &= top
    data[field.offset:field.offset + field.size] = value.to_bytes(field.size, field.order)
    return f"{field.name}@{field.offset}: {old}->{value}"


def _png_rebuild(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, payload in chunks:
        out += struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return bytes(out)


def _png_structured(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Edits that keep every CRC valid: header fields, the decompressed scanlines, chunk order and count."""
    chunks = [(kind, payload) for _, kind, payload in png_chunks(data)]
    if not chunks:
        return data, "png: no chunks"
    op = int(rng.integers(0, 5))
    if op == 0 and chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13:
        header = bytearray(chunks[0][1])
        what = _set_field(header, Field(int(rng.choice([0, 4, 8, 9, 10, 11, 12])), 1), rng)
        chunks[0] = (b"IHDR", bytes(header))
        return _png_rebuild(chunks), f"png IHDR {what} (crc fixed)"
    idat = [i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT"]
    if op <= 2 and idat:
        try:
            raw = bytearray(zlib.decompress(b"".join(chunks[i][1] for i in idat)))
        except zlib.error:
            return data, "png: idat not inflatable"
        if op == 1 and raw:  # scanline filter bytes and pixels
            for at in rng.integers(0, len(raw), int(rng.integers(1, 16))):
                raw[int(at)] = int(rng.integers(0, 256))
            what = "pixels/filters"
        else:
            cut = int(rng.integers(0, len(raw) + 1))
            raw = raw[:cut] + (bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8)) if rng.integers(0, 2) else b"")
            what = "scanlines cut/extended"
        packed = zlib.compress(bytes(raw))
        step = max(1, len(packed) // int(rng.integers(1, 5)))  # one to four IDAT chunks
        pieces = [packed[i:i + step] for i in range(0, len(packed), step)]
        rest = [c for i, c in enumerate(chunks) if i not in idat]
        chunks = rest[:-1] + [(b"IDAT", p) for p in pieces] + rest[-1:]
        return _png_rebuild(chunks), f"png idat {what} (recompressed, crc fixed)"
    if op == 3:  # an ancillary or critical chunk with odd content
        kind = [b"PLTE", b"tRNS", b"iCCP", b"eXIf", b"sBIT", b"gAMA", b"IDAT", b"IHDR", b"zTXt", b"acTL"][int(rng.integers(0, 10))]
        payload = bytes(rng.integers(0, 256, int(rng.integers(0, 800)), dtype=np.uint8))
        chunks.insert(int(rng.integers(1, len(chunks) + 1)), (kind, payload))
        return _png_rebuild(chunks), f"png chunk {kind!r} of {len(payload)} random bytes inserted"
    index = int(rng.integers(0, len(chunks)))
    if rng.integers(0, 2):
        chunks.insert(index, chunks[index])
        return _png_rebuild(chunks), f"png chunk {chunks[index][0]!r} duplicated"
    kind = chunks.pop(index)[0]
    return _png_rebuild(chunks), f"png chunk {kind!r} removed"


def _jpeg_structured(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Segment-level edits: drop, duplicate or swap header segments, corrupt tables, damage the scan."""
    segments = [s for s in jpeg_segments(data) if s[2] > 2]
    if not segments:
        return data, "jpeg: no segments"
    out = bytearray(data)
    marker, at, length = segments[int(rng.integers(0, len(segments)))]
    op = int(rng.integers(0, 4))
    if op == 0 and marker != 0xDA:
        del out[at:at + length]
        return bytes(out), f"jpeg segment {marker:02X} removed"
    if op == 1:
        out[at:at] = out[at:at + length]
        return bytes(out), f"jpeg segment {marker:02X} duplicated"
    if op == 2 and length > 4:
        for i in rng.integers(at + 4, at + length, int(rng.integers(1, 8))):
            out[int(i)] = int(rng.integers(0, 256))
        return bytes(out), f"jpeg segment {marker:02X} body bytes changed"
    scan = segments[-1][1] + segments[-1][2]
    if scan < len(out) - 2:  # markers and bytes inside the entropy-coded data
        at = int(rng.integers(scan, len(out) - 2))
        insert = bytes([0xFF, int(rng.choice([0xD0, 0xD3, 0xD7, 0xD9, 0xDA, 0xC4, 0x00, 0xFF]))])
        out[at:at] = insert
        return bytes(out), f"jpeg scan: {insert.hex()} inserted at {at}"
    return bytes(out), "jpeg: unchanged"


def _pnm_header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    parts = data.split(b"\n", 3)
    if len(parts) < 4:
        return data, "pnm: short"
    numbers = parts[1].split() + [parts[2]]
    numbers[int(rng.integers(0, len(numbers)))] = str(int(rng.choice(INTERESTING)) - int(rng.integers(0, 2))).encode()
    return b"\n".join([parts[0], b" ".join(numbers[:-1]), numbers[-1], parts[3]]), "pnm header number"


def _generic(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    out = bytearray(data)
    op = int(rng.integers(0, 6))
    if op == 0:
        for i in rng.integers(0, len(out), int(rng.integers(1, 32))):
            out[int(i)] ^= 1 << int(rng.integers(0, 8))
        return bytes(out), "bit flips"
    if op == 1:
        cut = int(rng.integers(1, len(out)))
        return bytes(out[:cut]), f"truncated to {cut}"
    if op == 2:
        start = int(rng.integers(0, len(out)))
        out[start:start] = out[start:start + int(rng.integers(1, 2048))]
        return bytes(out), f"chunk duplicated at {start}"
    if op == 3:
        start = int(rng.integers(0, len(out)))
        del out[start:start + int(rng.integers(1, 512))]
        return bytes(out), f"chunk deleted at {start}"
    if op == 4:  # a 16- or 32-bit size-like value anywhere in the header region
        size, order = int(rng.choice([2, 4])), ("big", "little")[int(rng.integers(0, 2))]
        at = int(rng.integers(0, max(1, min(len(out), 1024) - size)))
        return bytes(out), _set_field(out, Field(at, size, order, "int"), rng) if at + size <= len(out) else "short"
    for i in rng.integers(0, min(len(out), 600), int(rng.integers(1, 8))):
        out[int(i)] = int(rng.integers(0, 256))
    return bytes(out), "header bytes"


def mutate(data: bytes, family: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One to three stacked edits of ``data`` (a ``family`` image); returns (mutant, what was done)."""
    done = []
    for _ in range(int(rng.integers(1, 4))):
        roll = rng.random()
        fields = FIELDS[family](data) if roll < 0.4 else []
        if fields:
            out = bytearray(data)
            done.append(_set_field(out, fields[int(rng.integers(0, len(fields)))], rng))
            data = bytes(out)
        elif roll < 0.7 and family in ("png", "jpeg", "pnm"):
            data, what = {"png": _png_structured, "jpeg": _jpeg_structured, "pnm": _pnm_header}[family](data, rng)
            done.append(what)
        elif len(data) > 1:
            data, what = _generic(data, rng)
            done.append(what)
    return data, "; ".join(done)
