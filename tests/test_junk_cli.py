"""`eventmail junk analyze | retrain | play` as a user runs them, on a real data directory."""

import asyncio
import re
import shutil
from pathlib import Path

from eventmail.junk.play import read_message
from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key

from .mailserver import eventmail

CORPUS = Path(__file__).parent / "data" / "corpus"


def files(kind: str) -> list[Path]:
    return sorted(p for p in (CORPUS / kind).iterdir() if p.suffix == ".eml")


def setup(tmp_path: Path) -> tuple[Path, Path]:
    d, k = tmp_path / "data", tmp_path / "master.key"
    eventmail(d, k, "key", "init")
    eventmail(d, k, "account", "add", "ann", "ann@example.test", "--password-stdin", stdin="ann's password\n")

    async def train() -> None:
        store = await open_store(d, load_master_key(d, MasterKeySource(key_file=k)))
        try:
            async with store.use_account("ann") as acct:
                for p in files("ham")[:60]:
                    await acct.add_message("Archive", read_message(p), flags=["$NotJunk"])
                for p in files("spam")[:50]:
                    await acct.add_message("Junk", read_message(p), flags=["$Junk"])
        finally:
            await store.close()

    asyncio.run(train())
    return d, k


def test_analyze_retrain_and_play(tmp_path: Path) -> None:
    d, k = setup(tmp_path)
    out = eventmail(d, k, "junk", "analyze", "ann", str(files("spam")[60]))
    assert re.search(r"^verdict:   reject", out, re.M) and re.search(r"^method:    bayes$", out, re.M), out
    assert "trained:   60 not junk, 50 junk" in out and re.search(r"^spammy:    0\.\d+  ", out, re.M)
    out = eventmail(d, k, "junk", "analyze", "ann", str(files("ham")[200]))
    assert re.search(r"^verdict:   accept", out, re.M), out

    out = eventmail(d, k, "junk", "retrain", "ann")
    assert "60 not junk, 50 junk messages trained" in out and "equal what they were" in out

    ham, spam = tmp_path / "ham", tmp_path / "spam"
    ham.mkdir()
    spam.mkdir()
    for p in files("ham")[100:140]:
        shutil.copy(p, ham)
    for p in files("spam")[70:90]:
        shutil.copy(p, spam)
    out = eventmail(d, k, "junk", "play", "ann", "--ham", str(ham), "--spam", str(spam), "--train-fraction", "0.25")
    assert "60 messages in date order; the first 15 only train" in out
    m = re.search(r"spam caught:  (\d+)/(\d+)", out)
    n = re.search(r"ham rejected: (\d+)/(\d+)", out)
    assert m and n and int(m.group(2)) + int(n.group(2)) == 45
    assert re.search(r"^  spam +\d+ +\d+$", out, re.M) and re.search(r"^  ham +\d+ +\d+$", out, re.M)
    # play works on a scratch copy: the account's statistics are unchanged.
    out = eventmail(d, k, "junk", "retrain", "ann")
    assert "60 not junk, 50 junk messages trained" in out
