"""multipart/related bodies: parts come out whole however the body is cut into chunks."""

from __future__ import annotations

import random

import pytest

from voxelhub.store.dicomweb.multipart import PartReader, write_parts
from voxelhub.store.errors import InvalidQuery

BOUNDARY = "b0und"
DELIMITER = b"--" + BOUNDARY.encode()


def _read(body: bytes, cuts: list[int], *, max_part_bytes: int = 4 << 20) -> list[tuple]:
    reader = PartReader(BOUNDARY, max_part_bytes=max_part_bytes)
    parts = []
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        parts.extend(reader.feed(body[start:stop]))
    reader.close()
    return [(p.headers, p.body, p.size) for p in parts]


def _expected(body: bytes) -> list[tuple]:
    """The parts by the definition (RFC 2046 5.1.1), from the body as one string."""
    out = []
    for raw in (b"\r\n" + body).split(b"\r\n" + DELIMITER)[1:]:
        if raw.startswith(b"--"):
            break
        head, _, part = raw.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            if line.strip():
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        out.append((headers, part, len(part)))
    return out


@pytest.mark.parametrize("chunk", [13, 4096, 1 << 20])
def test_written_parts_read_back_whatever_the_chunking(chunk: int) -> None:
    rng = random.Random(chunk)
    bodies = [rng.randbytes(n) for n in (0, 1, 3000, 70_000, 1_200_000, 5)]
    bodies.append(b"\r\n--almost-a-boundary\r\n" * 3)
    body = b"".join(write_parts((("application/dicom", b) for b in bodies), BOUNDARY))
    parts = _read(body, list(range(chunk, len(body), chunk)))
    assert [body for _, body, _ in parts] == bodies
    assert {headers["content-type"] for headers, _, _ in parts} == {"application/dicom"}


@pytest.mark.parametrize("seed", range(40))
def test_parts_are_found_across_any_cut(seed: int) -> None:
    """Delimiters, near-delimiters and header ends cut anywhere, in chunks of 1 byte to
    hundreds of kilobytes (small ones are gathered, large ones kept as they came)."""
    rng = random.Random(seed)
    near = [b"\r\n--b0un", b"\r\n--b0unX", b"\r--b0und", b"\n--b0und", b"\r\n\r\n", b"--b0und"]
    bodies = []
    for _ in range(rng.randint(1, 6)):
        pieces = [rng.randbytes(rng.choice([0, 1, 7, 300, 70_000, 150_000]))]
        pieces += [rng.choice(near) + rng.randbytes(rng.randint(0, 40)) for _ in range(3)]
        rng.shuffle(pieces)
        part = b"".join(pieces)
        if b"\r\n" + DELIMITER not in b"\r\n" + part + b"\r\n":  # a sender's duty
            bodies.append(part)
    preamble = rng.choice([b"", b"a preamble\r\n", b"--b0un\r\n"])
    body = preamble + b"".join(
        DELIMITER + b"\r\n" + rng.choice([b"", b"Content-Type: application/dicom\r\n"])
        + b"\r\n" + part + b"\r\n" for part in bodies
    ) + DELIMITER + b"--\r\nan epilogue " + DELIMITER  # fmt: skip
    cuts, at = [], 0
    while True:
        at += rng.choice([1, 2, 5, 29, 1000, 65_535, 65_536, 200_000])
        if at >= len(body):
            break
        cuts.append(at)
    assert _read(body, cuts) == _expected(body)
    assert [part for _, part, _ in _expected(body)] == bodies


def test_a_part_over_the_limit_is_refused_before_it_is_whole() -> None:
    body = b"".join(write_parts([("application/dicom", bytes(300_000))], BOUNDARY))
    with pytest.raises(InvalidQuery, match="larger than 100000 bytes"):
        _read(body, list(range(65_536, len(body), 65_536)), max_part_bytes=100_000)


def test_headers_without_an_end_are_refused() -> None:
    body = DELIMITER + b"\r\n" + b"X-Long: " + b"x" * 20_000
    with pytest.raises(InvalidQuery, match="headers exceed 16 KiB"):
        _read(body + b"\r\n\r\n", [len(body)])


def test_a_body_cut_off_before_its_closing_boundary_is_refused() -> None:
    body = b"".join(write_parts([("application/dicom", b"abc")], BOUNDARY))
    with pytest.raises(InvalidQuery, match="ended before its closing boundary"):
        _read(body[:-10], [])
