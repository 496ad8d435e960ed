"""A delivery's junk features are copied only when shared: the identities go onto the delivery's own, and the only account's plan keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventmail.junk.delivery import JunkFilter
from eventmail.junk.features import content_features, with_identities
from tests.conftest import open_store

RAW = b"From: s@x.test\r\nMessage-ID: <1@x.test>\r\nSubject: cheap pills\r\n\r\nbody words here\r\n"


def test_identities_go_onto_a_copy_unless_the_caller_owns_the_features() -> None:
    content = content_features(RAW)
    copied = with_identities(content, remote_ip="192.0.2.1")
    assert copied is not content and list(copied.words) == list(content.words)
    assert list(copied.ip_nets) and not list(content.ip_nets)  # the original is untouched
    owned = with_identities(content, remote_ip="192.0.2.1", in_place=True)
    assert owned is content and list(owned.ip_nets) == list(copied.ip_nets)


def test_the_only_accounts_plan_keeps_the_features_two_accounts_get_copies(keyed_dir: tuple[Path, bytes]) -> None:
    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            await store.create_account("a", ["a@example.test"], None)
            jf = JunkFilter(clock=lambda: 1_800_000_000, draw=lambda: 0.5)
            base = with_identities(content_features(RAW), remote_ip="192.0.2.1", in_place=True)
            async with store.use_account("a") as acct:
                own = await jf.plan(acct, RAW, base, None, remote_ip="192.0.2.1", tls=True,
                                    recipients=["a@example.test"], own=True)
                shared = await jf.plan(acct, RAW, base, None, remote_ip="192.0.2.1", tls=True,
                                       recipients=["a@example.test"])
            assert own.features is base
            assert shared.features is not base and shared.features == base
        finally:
            await store.close()

    asyncio.run(go())
