"""Deterministic output stream for bench/log_streaming.py.

Run inside a step container, it writes a seeded stream of about `--bytes` bytes to
stdout. bench/log_streaming.py imports it to compute what the stream must look like
once split into lines: the content bytes, their sha256 and the number of lines and
of 64 KiB pieces. The script uses only the standard library, because it runs with the
image's Python.

The stream is a sequence of pages. Each page starts with a line naming its number, so
equal pages at different places differ, followed by lines drawn from a seeded random
generator:

- log lines of 40 to 160 bytes, some with non-ASCII characters (`\\n`);
- short lines of 1 to 40 bytes, and empty lines (`\\n`);
- long lines of 200 to 2,000 bytes, like a printed JSON document (`\\n`);
- lines ending with `\\r\\n`, as Windows tools print them;
- progress bars: runs of 10 to 50 redraws that end with `\\r`, then a final `\\n` line.

Exactly one line of 1 MiB sits after the middle page. A line that ends with `\\r` is
never followed by an empty line, because `\\r` then `\\n` is one line end (CRLF).
"""

import argparse
import hashlib
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

# The core sends a line longer than this in pieces of this size (src/logs.rs).
PIECE_BYTES = 64 * 1024
HUGE_LINE_BYTES = 1 << 20
PAGE_BYTES = 1 << 20
# Distinct pages drawn from the seed; the stream cycles through them.
DISTINCT_PAGES = 16

WORDS = (
    "epoch batch loss accuracy step loaded saved checkpoint artifact model dataset "
    "shard worker gradient optimizer learning_rate validation müller café 数据 €"
).split()
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR")

# A line is its content and its terminator.
Line = Tuple[bytes, bytes]


def _words(rng: random.Random, size: int) -> bytes:
    """Return about `size` bytes of words, cut at a character boundary."""
    parts: List[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        parts.append(word)
        length += len(word.encode()) + 1
    text = " ".join(parts).encode()[:size]
    return text.decode(errors="ignore").encode()


def _log_line(rng: random.Random) -> bytes:
    prefix = "2026-01-01 12:%02d:%02d,%03d %-7s trainer: " % (
        rng.randrange(60),
        rng.randrange(60),
        rng.randrange(1000),
        rng.choice(LEVELS),
    )
    return prefix.encode() + _words(rng, rng.randint(10, 120))


def _json_line(rng: random.Random) -> bytes:
    size = rng.randint(200, 2000)
    fields = []
    length = 2
    while length < size:
        field = '"%s_%d": %d.%04d' % (
            rng.choice(WORDS[:16]),
            rng.randrange(100),
            rng.randrange(1000),
            rng.randrange(10000),
        )
        fields.append(field)
        length += len(field) + 2
    return ("{" + ", ".join(fields) + "}").encode()[:size]


def _progress_bar(rng: random.Random) -> List[Line]:
    redraws = rng.randint(10, 50)
    lines: List[Line] = []
    for index in range(redraws + 1):
        done = index * 40 // redraws
        bar = "#" * done + "." * (40 - done)
        percent = index * 100 // redraws
        text = f"Epoch {rng.randrange(100):3d}: {percent:3d}%|{bar}| {index}/{redraws}"
        lines.append((text.encode(), b"\r" if index < redraws else b"\n"))
    return lines


def _page(rng: random.Random) -> List[Line]:
    """Return about PAGE_BYTES of lines in the documented mix."""
    lines: List[Line] = []
    size = 0
    while size < PAGE_BYTES:
        kind = rng.random()
        if kind < 0.55:
            new = [(_log_line(rng), b"\n")]
        elif kind < 0.72:
            new = [(_words(rng, rng.randint(1, 40)), b"\n")]
        elif kind < 0.75:
            new = [(b"", b"\n")]
        elif kind < 0.85:
            new = [(_json_line(rng), b"\n")]
        elif kind < 0.995:
            new = [(_log_line(rng), b"\r\n")]
        else:
            new = _progress_bar(rng)
        lines.extend(new)
        size += sum(len(content) + len(end) for content, end in new)
    return lines


def _encode(lines: List[Line]) -> bytes:
    return b"".join(content + end for content, end in lines)


@dataclass
class Stream:
    """The pages of one stream, and the order they are written in."""

    pages: List[List[Line]]
    page_count: int

    @classmethod
    def build(cls, seed: int, total_bytes: int) -> "Stream":
        rng = random.Random(seed)
        pages = [_page(rng) for _ in range(DISTINCT_PAGES)]
        page_count = max(1, total_bytes // PAGE_BYTES)
        return cls(pages, page_count)

    def parts(self) -> Iterator[Tuple[int, List[Line]]]:
        """Yield the stream in order as (page index, lines). The index is -1 for the
        page headers and the long line, because they are not in `pages`."""
        huge_rng = random.Random(self.page_count)
        for number in range(self.page_count):
            yield -1, [(b"=== page %06d ===" % number, b"\n")]
            index = number % DISTINCT_PAGES
            yield index, self.pages[index]
            if number == self.page_count // 2:
                pattern = bytes(huge_rng.choice(b"abcdefghij") for _ in range(64))
                yield -1, [(pattern * (HUGE_LINE_BYTES // 64), b"\n")]

    def chunks(self) -> Iterator[bytes]:
        """Yield the encoded stream in order. Each distinct page is encoded once."""
        encoded = [_encode(page) for page in self.pages]
        for index, lines in self.parts():
            yield encoded[index] if index >= 0 else _encode(lines)


@dataclass
class Expected:
    """Line statistics that a reader splitting the stream into lines must find."""

    stream_bytes: int
    content_bytes: int
    sha256: str
    lines: int
    pieces: int
    longest_line: int
    # Number of lines of each kind; see `line_kind`.
    mix: Dict[str, int]


def line_kind(content: bytes, end: bytes) -> str:
    """Name the kind of a line for the description of the mix."""
    if end == b"\r":
        return "progress redraw (\\r)"
    if end == b"\r\n":
        return "CRLF"
    if not content:
        return "empty"
    if len(content) >= HUGE_LINE_BYTES:
        return "1 MiB"
    if len(content) >= 200:
        return "200 B to 2 KB"
    if len(content) > 40:
        return "41 to 199 B"
    return "1 to 40 B"


def expected(seed: int, total_bytes: int) -> Expected:
    """Compute the line statistics of the stream for `seed` and `total_bytes`.

    The digest covers the line contents in order, without terminators.
    """
    stream = Stream.build(seed, total_bytes)
    digest = hashlib.sha256()
    stream_bytes = content_bytes = lines = pieces = longest = 0
    mix: Dict[str, int] = {}
    for _, part in stream.parts():
        for content, end in part:
            kind = line_kind(content, end)
            mix[kind] = mix.get(kind, 0) + 1
            digest.update(content)
            stream_bytes += len(content) + len(end)
            content_bytes += len(content)
            lines += 1
            # The core sends a full piece as soon as its buffer reaches PIECE_BYTES, so a line
            # of exactly PIECE_BYTES ends with an empty last piece. Lines that long
            # are ASCII here, so no piece is shortened to keep a character whole.
            pieces += len(content) // PIECE_BYTES + 1
            longest = max(longest, len(content))
    return Expected(
        stream_bytes, content_bytes, digest.hexdigest(), lines, pieces, longest, mix
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--bytes", type=int, required=True, help="stream size in bytes")
    parser.add_argument(
        "--report", action="store_true", help="print the write rate to stderr at the end"
    )
    args = parser.parse_args()

    stream = Stream.build(args.seed, args.bytes)
    chunks = stream.chunks()
    started = time.monotonic()
    written = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            count = os.write(1, view)
            view = view[count:]
        written += len(chunk)
    elapsed = time.monotonic() - started
    if args.report:
        print(
            f"wrote {written} bytes in {elapsed:.3f} s: {written / elapsed / 1e6:.1f} MB/s",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
