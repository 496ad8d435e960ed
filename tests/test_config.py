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


def test_docs_config_lists_every_key() -> None:
    """docs/config.md is the reference: a key the parser knows and the page does not is a failure."""
    import re

    from eventmail import config as c

    from .conftest import ROOT

    text = (ROOT / "docs" / "config.md").read_text()
    sections = {m.group(1): m.start() for m in re.finditer(r"^## (.+)$", text, re.M)}

    def section(title: str) -> str:
        start = sections[title]
        later = [v for v in sections.values() if v > start]
        return text[start:min(later) if later else len(text)]

    tables = {"Top level": c.TOP_KEYS, "[tls]": c.TLS_KEYS, "[[listener]]": c.LISTENER_KEYS,
              "[resolver]": c.RESOLVER_KEYS, "[[route]]": c.ROUTE_KEYS, "[queue]": c.QUEUE_KEYS,
              "[replication]": c.REPLICATION_KEYS, "[acme]": c.ACME_KEYS, "[limits]": frozenset(c.ServerLimits.__dataclass_fields__)}
    for title, keys in tables.items():
        body = section(title)
        missing = sorted(k for k in keys if f"| `{k}` |" not in body)
        assert not missing, f"docs/config.md, {title}: no row for {missing}"
