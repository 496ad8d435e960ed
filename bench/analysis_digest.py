"""A digest of SMTP's analysis output over a corpus, to show a change to the analysis left it byte for byte the same.

    python bench/analysis_digest.py [DIR ...]   (default: tests/data/corpus; give the shared junk corpus too)

For every .eml file (CRLF line ends, as SMTP hands them over) it runs smtp.analysis.analyze_incoming
and hashes all that comes back (the cut bytes, the structure, the author, the junk features with
their tokens, DKIM's prepared checks, the To/Cc addresses, the tree's shape; not the junk
projection's content row, a function of the tokens that came after the first digests), and prints one
SHA-256 over the corpus with the file count. Run it before and after a change: the same digest
means the junk filter's figures (bench/junk.py) and every stored structure cannot have moved.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventmail.mime.structure import MimeTooDeep  # noqa: E402
from eventmail.smtp.analysis import analyze_incoming  # noqa: E402


def crlf(path: Path) -> bytes:
    data = path.read_bytes().replace(b"\r\n", b"\n")
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data.replace(b"\n", b"\r\n")


def main() -> int:
    dirs = [Path(d) for d in sys.argv[1:]] or [ROOT / "tests" / "data" / "corpus"]
    total = hashlib.sha256()
    n = 0
    for path in sorted(p for d in dirs for p in d.rglob("*.eml")):
        try:
            out: object = analyze_incoming(crlf(path), "mx.example.test")[:7]
        except MimeTooDeep as e:
            out = repr(e)
        total.update(hashlib.sha256(pickle.dumps(out, protocol=5)).digest())
        n += 1
    print(f"{n} messages: {total.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
