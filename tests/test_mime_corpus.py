"""MIME parsing over the real-mail corpus: no exceptions, consistent offsets, sections, and parse time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventmail.mime import parse_structure
from eventmail.mime.imapform import (
    decode_part,
    extract_section,
    render_bodystructure,
    render_envelope,
)
from eventmail.proto import events_pb2

from .test_mime_structure import FIXTURES, check_offsets, load_fixture

ROOT = Path(__file__).resolve().parent.parent
# The shared development corpus (3,000 messages) next to the repository, else the copy in tests/data.
CORPORA = [ROOT.parent / "shared" / "corpus", ROOT / "tests" / "data" / "corpus"]


def corpus_files() -> list[Path]:
    for base in CORPORA:
        files = sorted(base.glob("ham/*.eml")) + sorted(base.glob("spam/*.eml"))
        if files:
            return files
    return []


def as_stored(data: bytes) -> bytes:
    """A corpus file as a stored message: the mbox From_ line dropped, LF turned into CRLF."""
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    return data.replace(b"\n", b"\r\n")


def numbered(st: events_pb2.MessageStructure) -> Iterator[tuple[str, events_pb2.MimePart]]:
    """Every part with its RFC 9051 §6.4.5 section number."""

    def inside(body: events_pb2.MimePart, prefix: str) -> Iterator[tuple[str, events_pb2.MimePart]]:
        children = list(body.parts) if body.type == b"multipart" else [body]
        for i, part in enumerate(children, 1):
            path = f"{prefix}{i}"
            yield path, part
            if part.type == b"multipart" and part is not body:
                yield from inside(part, path + ".")
            elif part.type == b"message" and part.HasField("message"):
                yield from inside(part.message, path + ".")

    yield from inside(st.body, "")


def check_message(raw: bytes) -> events_pb2.MessageStructure:
    st = parse_structure(raw)
    check_offsets(raw, st.body)
    assert st.body.header_start == 0 and st.body.end == len(raw)
    assert events_pb2.MessageStructure.FromString(st.SerializeToString()) == st
    render_envelope(st.envelope)
    render_bodystructure(st.body, True)
    render_bodystructure(st.body, False, imap4rev2=True)
    for path, part in numbered(st):
        assert extract_section(raw, st, path) == raw[part.body_start : part.end]
        assert extract_section(raw, st, path + ".MIME") == raw[part.header_start : part.body_start]
        decode_part(raw, part)
    assert extract_section(raw, st, "HEADER") == raw[: st.body.body_start]
    assert extract_section(raw, st, "TEXT") == raw[st.body.body_start :]
    return st


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_fixture(name: str) -> None:
    check_message(load_fixture(name))


# BODYSTRUCTURE of fixtures, checked once against Dovecot 2.3 (which sends type names as written
# and adds charset=us-ascii to every text part; we lower-case and add it to text/plain only).
KNOWN = {
    "report-headers.eml": (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 302 9 NIL NIL NIL NIL)'
        b'("message" "delivery-status" NIL NIL NIL "7bit" 149 NIL NIL NIL NIL)'
        b'("text" "rfc822-headers" NIL NIL NIL "7bit" 2559 42 NIL NIL NIL NIL) "report" '
        b'("report-type" "delivery-status" "boundary" "_===6628399====mx1.yipes.com===_") NIL NIL NIL)'
    ),
    "signed-nested-mixed.eml": (
        b'((("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 971 23 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "US-ASCII") NIL NIL "8bit" 2441 65 NIL ("attachment" ("filename" "exmh-patch")) NIL NIL)'
        b'("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 134 3 NIL NIL NIL NIL) "mixed" '
        b'("boundary" "Multipart_Fri_Sep_27_14:42:27_2002-1") NIL NIL NIL)'
        b'("application" "pgp-signature" ("name" "signature.ng") NIL NIL "7bit" 196 NIL '
        b'("inline" ("filename" "signature.ng")) NIL NIL) "signed" ("boundary" "----------=_1033130560-1199-5" '
        b'"micalg" "pgp-sha1" "protocol" "application/pgp-signature") NIL NIL NIL)'
    ),
    "boundary-prefix.eml": (
        b'((("text" "html" ("charset" "big5") NIL NIL "base64" 19938 257 NIL NIL NIL NIL) "alternative" '
        b'("boundary" "----=_NextPart_lBwzzJ0s7cGEidV47BAA") NIL NIL NIL) "related" '
        b'("type" "multipart/alternative" "boundary" "----=_NextPart_lBwzzJ0s7cGEidV47B") NIL NIL NIL)'
    ),
    "boundary-mismatch.eml": (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "alternative" '
        b'("boundary" "=Multipart Boundary 0925021429") NIL NIL NIL)'
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_fixture_bodystructure(name: str) -> None:
    assert render_bodystructure(parse_structure(load_fixture(name)).body, True) == KNOWN[name]


def test_fixture_envelopes() -> None:
    st = parse_structure(load_fixture("subject-8bit.eml"))
    assert render_envelope(st.envelope).startswith(
        b'("Fri, 27 Sep 2002 08:01:03 -0000" {54}\r\nGambler wins \xa37,000 - and spends it all on horse shiat ('
    )
    st = parse_structure(load_fixture("group-undisclosed.eml"))
    assert b' ((NIL NIL "undisclosed-recipient" NIL)(NIL NIL NIL NIL)) ' in render_envelope(st.envelope)
    st = parse_structure(load_fixture("subject-encoded.eml"))
    assert (
        st.envelope.subject
        == b"=?iso-8859-1?Q?Re:_RE:_=5Bzzzzteana=5D_Sitting_Bull_=FCber_alles_=5BLong=5D?="
    )


def test_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    files = corpus_files()
    if not files:
        pytest.skip("no corpus next to the repository")
    messages = [as_stored(p.read_bytes()) for p in files]
    for raw in messages:
        check_message(raw)
    # Parse time per message: best of three runs, so a busy machine does not decide it.
    per_message: list[float] = []
    for raw in messages:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            parse_structure(raw)
            best = min(best, time.perf_counter() - t0)
        per_message.append(best)
    mean_ms = statistics.fmean(per_message) * 1000
    size = statistics.fmean(len(m) for m in messages)
    with capsys.disabled():
        print(
            f"\nparse_structure over {len(messages)} corpus messages (mean {size / 1024:.1f} KiB): "
            f"mean {mean_ms:.3f} ms, median {statistics.median(per_message) * 1000:.3f} ms, "
            f"max {max(per_message) * 1000:.3f} ms"
        )


# Inputs built to make a careless parser quadratic (or worse). Each is a few MB at most.
def _deep_with_candidate_lines() -> bytes:
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=" + b"x" * n + b"\r\n\r\n--" + b"x" * n + b"\r\n"
        for n in range(1, 50)
    )
    return head + b"\r\n" + (b"--" + b"x" * 100 + b"\r\n") * 20_000 + (b"--" + b"q" * 70 + b"\r\n") * 20_000


ADVERSARIAL: dict[str, Callable[[], bytes]] = {
    "deep nesting, candidate lines": _deep_with_candidate_lines,
    "lines of dashes": lambda: b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--\r\n" * 300_000,
    "many parts": lambda: b"Content-Type: multipart/mixed; boundary=a\r\n\r\n" + b"--a\r\n" * 300_000,
    "many multiparts": lambda: (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"".join(
            b"--a\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n\r\nx\r\n" % (i, i)
            for i in range(20_000)
        )
    ),
    "one long header": lambda: b"Subject: " + b"a" * 3_000_000 + b"\r\n\r\nx",
    "many header lines": lambda: b"X: y\r\n" * 300_000 + b"\r\nx",
    "many addresses": lambda: b"To: " + b"a@b, " * 40_000 + b"\r\n\r\nx",
    "open comments": lambda: (
        b"Content-Type: text/plain; a=" + b"(" * 200_000 + b"\r\nTo: " + b"(" * 200_000 + b"\r\n\r\n"
    ),
    "open quotes": lambda: (
        b"Content-Type: text/plain; a=" + b'"' * 200_000 + b"\r\nTo: " + b'"\\' * 100_000 + b"\r\n\r\n"
    ),
    "many parameters": lambda: b"Content-Type: text/plain" + b"; a*1=b" * 50_000 + b"\r\n\r\nx",
    "nested messages": lambda: b"Content-Type: message/rfc822\r\n\r\n" * 100_000,
    "boundary lines in a header": lambda: (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" + b"X: y\r\n--b\r\n" * 200_000
    ),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_input_stays_linear(name: str) -> None:
    raw = ADVERSARIAL[name]()
    # CPU time of this process, not wall time, so other work on the machine does not count. A
    # linear parser needs well under a second for these few MB; a quadratic one needs minutes,
    # so the bound tells the two apart without being a performance target.
    t0 = time.process_time()
    st = parse_structure(raw)
    elapsed = time.process_time() - t0
    check_offsets(raw, st.body)
    render_bodystructure(st.body, True)
    assert elapsed < 10.0, f"{name}: {elapsed:.2f} s of CPU for {len(raw)} bytes"
