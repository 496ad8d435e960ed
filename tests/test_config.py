"""The TOML configuration: valid files load, every mistake is named by its key."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.config import ConfigError, parse

GOOD = """
hostname = "mail.example.test"
data_dir = "data"
key_file = "/etc/eventmail/master.key"
[tls]
cert = "cert.pem"
key = "key.pem"
[resolver]
nameservers = ["127.0.0.1"]
port = 15353
[[listener]]
kind = "smtp"
address = "127.0.0.1"
port = 2525
[[listener]]
kind = "imaps"
address = "::1"
port = 1993
"""


def test_a_valid_file_loads(tmp_path: Path) -> None:
    c = parse(GOOD, tmp_path)
    assert c.hostname == "mail.example.test"
    assert c.data_dir == tmp_path / "data"
    assert c.key_file == Path("/etc/eventmail/master.key")
    assert [(li.kind, li.port) for li in c.listeners] == [("smtp", 2525), ("imaps", 1993)]
    assert c.resolver.port == 15353


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('hostname = "mail.example.test"', ""), "hostname: missing"),
        (('port = 2525', 'port = "2525"'), "listener[0].port: expected int"),
        (('port = 2525', "port = 70000"), "listener[0].port: 70000 is not a port"),
        (('kind = "smtp"', 'kind = "pop3"'), "listener[0].kind"),
        (('address = "127.0.0.1"', 'address = "localhost"'), "listener[0].address"),
        (('cert = "cert.pem"', ""), "tls.cert: missing"),
        (('nameservers = ["127.0.0.1"]', 'nameservers = ["x"]'), "resolver.nameservers"),
        (('data_dir = "data"', 'data_dir = "data"\ncolour = "blue"'), "colour: unknown setting"),
        (('key_file = "/etc/eventmail/master.key"', 'key_file = "k"\npassphrase_env = "P"'), "key_file, passphrase_env"),
        (('hostname = "mail.example.test"', 'hostname = "mail.example.test'), "not valid TOML"),
        (('nameservers = ["127.0.0.1"]', 'nameserver = ["127.0.0.1"]'), "resolver.nameserver: unknown setting"),
        (('cert = "cert.pem"', 'cert = "cert.pem"\nchain = "x.pem"'), "tls.chain: unknown setting"),
        (('port = 2525', 'port = 2525\ntls = true'), "listener[0].tls: unknown setting"),
        (('data_dir = "data"', 'data_dir = "data"\ndeletion_grace_days = -1'), "deletion_grace_days: from 0"),
    ],
)
def test_mistakes_are_named_by_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(*change, 1), tmp_path)
    assert key in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse(text, Path("/"))
    except ConfigError:
        pass


def test_reference_matches_the_parser_and_the_page() -> None:
    """eventmail/configref.py is the reference: its keys are exactly the parser's, its simple
    defaults are the parser's, and docs/config.md holds its tables as generated."""
    import re

    from eventmail import config as c
    from eventmail import configref

    from .conftest import ROOT

    parser = {"Top level": c.TOP_KEYS, "[tls]": c.TLS_KEYS, "[[listener]]": c.LISTENER_KEYS,
              "[resolver]": c.RESOLVER_KEYS, "[[route]]": c.ROUTE_KEYS, "[queue]": c.QUEUE_KEYS,
              "[replication]": c.REPLICATION_KEYS, "[mta_sts]": c.MTA_STS_KEYS, "[log]": c.LOG_KEYS, "[acme]": c.ACME_KEYS,
              "[limits]": frozenset(c.ServerLimits.__dataclass_fields__)}
    documented = {t.title: frozenset(k.name for k in t.keys) for t in configref.TABLES}
    assert documented == parser
    # Where a table is a dataclass of the same field names, a plain documented default is its default.
    defaults = {"[queue]": c.QueueSettings(), "[limits]": c.ServerLimits(), "[mta_sts]": c.MtaStsSettings(),
                "[log]": c.LogSettings()}
    for t in configref.TABLES:
        if t.title not in defaults:
            continue
        for k in t.keys:
            m = re.fullmatch(r"`([^`]*)`.*", k.default)
            if m is None or not hasattr(defaults[t.title], k.name):
                continue
            actual = getattr(defaults[t.title], k.name)
            shown = m.group(1).strip('"')
            if isinstance(actual, tuple):
                assert shown in ("[]", "{}") and actual == (), (t.title, k.name)
            elif isinstance(actual, float):
                assert float(shown) == actual, (t.title, k.name, shown, actual)
            else:
                assert shown == str(actual), (t.title, k.name, shown, actual)
    assert configref.markdown() in (ROOT / "docs" / "config.md").read_text(), \
        "docs/config.md is stale: paste `eventmail config describe --markdown` over its tables"


def test_config_describe_prints_the_reference() -> None:
    import subprocess
    import sys

    from eventmail import configref

    from .conftest import ROOT

    md = subprocess.run([sys.executable, "-m", "eventmail", "config", "describe", "--markdown"], capture_output=True,
                        text=True, timeout=60, cwd=ROOT)
    assert md.returncode == 0 and md.stdout == configref.markdown()
    text = subprocess.run([sys.executable, "-m", "eventmail", "config", "describe"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT).stdout
    assert "request_head_timeout" in text and "default: 30" in text


REPLICATION = ('[replication]\nnode = "a"\npeer_node = "b"\nlisten = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n'
               'cert = "n.pem"\nkey = "n.key"\npeer_cert = "p.pem"\n')


def test_a_replicated_message_fits_the_link(tmp_path: Path) -> None:
    """With [replication] a message's blob crosses the link in one gRPC message: a size limit the
    link cannot carry would stop replication at the first such message, so the file is refused."""
    from eventmail.config import REPLICATED_MESSAGE_BYTES
    from replica.tlsauth import MAX_MESSAGE_BYTES

    assert REPLICATED_MESSAGE_BYTES + (1 << 20) < MAX_MESSAGE_BYTES  # room for trace fields and framing
    big = f"max_message_bytes = {REPLICATED_MESSAGE_BYTES + 1}\n"
    assert parse(big + GOOD, tmp_path).max_message_bytes == REPLICATED_MESSAGE_BYTES + 1  # no replication: fine
    with pytest.raises(ConfigError) as info:
        parse(big + GOOD + REPLICATION, tmp_path)
    assert "max_message_bytes: at most" in str(info.value)
    at_limit = f"max_message_bytes = {REPLICATED_MESSAGE_BYTES}\n"
    assert parse(at_limit + GOOD + REPLICATION, tmp_path).replication is not None
