"""/metrics against a real `eventmail serve`: real SMTP (MX and submission) and IMAP traffic, then the
exposition read by prometheus-client's parser and checked by Prometheus's promtool; the counters
moved by exactly what the clients did. Also the alert rules (promtool check and unit tests) and the
Grafana dashboard: every metric they name exists."""

from __future__ import annotations

import imaplib
import json
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventmail import control
from eventmail.metrics import REGISTRY

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer

PASSWORD = "metrics test password"
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "eventmail-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "eventmail-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "eventmail-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def zones() -> dict[str, str]:
    return {
        "mail.test": zone_text("mail.test", ["@ A 127.0.0.1", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
        "sender.test": zone_text("sender.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=none"']),
        # Mail claiming to be from here is refused at the MX: SPF fails, DMARC says reject.
        "forged.test": zone_text("forged.test", ['@ TXT "v=spf1 -all"', '_dmarc TXT "v=DMARC1; p=reject"']),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("metrics")
    # allow_plaintext_auth: logins without TLS from loopback (localserve's rule), so the clients
    # below stay simple; the counting is the same with TLS.
    srv = MailServer(base, allow_plaintext_auth=True, kinds=("smtp", "submission", "imap"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    with DnsServer.start(base / "dns", zones()) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()


def scrape(srv: MailServer) -> str:
    """The exposition as the server serves it (the control socket's `metrics`, the same text
    generate_latest(REGISTRY) gives the HTTP listener)."""
    reply = control.request_in(srv.directory, "metrics")
    assert reply is not None
    return str(reply["metrics"])


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def message(sender: str, rcpt: str, subject: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Message-ID"] = f"<{subject.replace(' ', '.')}@{sender.rpartition('@')[2]}>"
    m.set_content("counted\n")
    return m.as_bytes().replace(b"\n", b"\r\n")


def mx_traffic(srv: MailServer) -> None:
    """Two deliveries; an unknown recipient, a relaying attempt and a DMARC reject refused."""
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("sender.test")
        for i in range(2):
            s.sendmail("bob@sender.test", ["alice@mail.test"], message("bob@sender.test", "alice@mail.test", f"mx {i}"))
        s.mail("bob@sender.test")
        assert s.rcpt("nobody@mail.test")[0] == 550
        assert s.rcpt("someone@elsewhere.test")[0] == 550
        s.rset()
        s.mail("eve@forged.test")
        assert s.rcpt("alice@mail.test")[0] == 250
        code, _ = s.data(message("eve@forged.test", "alice@mail.test", "forged"))
        assert code == 550


def submission_traffic(srv: MailServer) -> None:
    """A failed and a good login (PLAIN only: smtplib's login() would try LOGIN after a failed
    PLAIN, a second failure); a From not the account's refused; one message submitted."""
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.test")
        s.user, s.password = "alice@mail.test", "not the password"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.auth("PLAIN", s.auth_plain)
        s.user, s.password = "alice@mail.test", PASSWORD
        assert s.auth("PLAIN", s.auth_plain)[0] == 235
        assert s.mail("someone@elsewhere.test")[0] == 553
        s.sendmail("alice@mail.test", ["alice@mail.test"], message("alice@mail.test", "alice@mail.test", "note"))


def wait_until(predicate: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.05)


def test_counters_move_by_what_the_clients_did(server: MailServer) -> None:
    before = samples(scrape(server))
    mx_traffic(server)
    submission_traffic(server)
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("alice@mail.test", "wrong")
    imap.login("alice@mail.test", PASSWORD)
    during = samples(scrape(server))
    assert imap.select("INBOX")[0] == "OK"
    assert imap.select("Nope")[0] == "NO"
    assert imap.select("INBOX")[0] == "OK"
    assert imap.uid("FETCH", "1:*", "(FLAGS)")[0] == "OK"
    assert imap.fetch("1", "(UID)")[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error):
        imap.xatom("FROBNICATE", "alice@mail.test")  # no such command: a BAD, counted as INVALID
    imap.logout()
    wait_until(lambda: value(samples(scrape(server)), "eventmail_imap_sessions") == 0, "the IMAP session ends")
    text = scrape(server)
    after = samples(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # SMTP: what was accepted and refused, by listener and reason.
    assert delta("eventmail_smtp_deliveries_total", role="mx") == 2
    assert delta("eventmail_smtp_deliveries_total", role="submission") == 1
    assert delta("eventmail_smtp_rejects_total", role="mx", reason="unknown_recipient") == 1
    assert delta("eventmail_smtp_rejects_total", role="mx", reason="relaying_denied") == 1
    assert delta("eventmail_smtp_rejects_total", role="mx", reason="dmarc") == 1
    assert delta("eventmail_smtp_rejects_total", role="submission", reason="sender_not_yours") == 1
    # The junk filter decided once per delivered message (alice has no training: content untrained).
    junk = {k: v - before.get(k, 0.0) for k, v in after.items() if k[0] == "eventmail_junk_verdicts_total"}
    assert sum(junk.values()) == 2
    assert delta("eventmail_junk_verdicts_total", method="bayes:untrained", verdict="accept") == 2
    # Logins, through the one guard of every protocol.
    assert delta("eventmail_logins_total", protocol="smtp") == 1
    assert delta("eventmail_login_failures_total", protocol="smtp", reason="invalid-credentials") == 1
    assert delta("eventmail_logins_total", protocol="imap") == 1
    assert delta("eventmail_login_failures_total", protocol="imap", reason="invalid-credentials") == 1
    # IMAP: the session was counted while open, and each command by its result.
    assert value(during, "eventmail_imap_sessions") == 1
    assert delta("eventmail_imap_commands_total", command="LOGIN", result="no") == 1
    assert delta("eventmail_imap_commands_total", command="LOGIN", result="ok") == 1
    assert delta("eventmail_imap_commands_total", command="SELECT", result="ok") == 2
    assert delta("eventmail_imap_commands_total", command="SELECT", result="no") == 1
    assert delta("eventmail_imap_commands_total", command="UID FETCH", result="ok") == 1
    assert delta("eventmail_imap_commands_total", command="FETCH", result="ok") == 1
    assert delta("eventmail_imap_commands_total", command="INVALID", result="bad") == 1
    assert delta("eventmail_imap_commands_total", command="LOGOUT", result="ok") == 1
    # Store: every accepted message was at least one fsynced commit (the submitted one's Sent and
    # INBOX copies may share one group commit); each observation lands in a bucket and the sum.
    assert delta("eventmail_store_fsync_seconds_count") >= 3
    assert delta("eventmail_store_fsync_seconds_bucket", le="+Inf") == delta("eventmail_store_fsync_seconds_count")
    assert delta("eventmail_store_fsync_seconds_sum") > 0
    # The server process's own: its resident memory, and CPU time that grew with the traffic.
    assert value(after, "process_resident_memory_bytes") > 10 << 20
    assert delta("process_cpu_seconds_total") > 0
    # No client text or address became a label value.
    for needle in ("FROBNICATE", "alice", "mail.test", "sender.test", "elsewhere.test", "127.0.0.1"):
        assert needle not in text


@needs_promtool
def test_promtool_accepts_the_exposition(server: MailServer) -> None:
    p = subprocess.run([str(PROMTOOL), "check", "metrics"], input=scrape(server), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def known_names() -> set[str]:
    """Every series name the registry can produce (a histogram's _bucket, _count and _sum too, and
    the _created of counters and histograms: their start time)."""
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_count", "_sum", "_created")}.get(family.type, ())
        names.update(family.name + s for s in suffixes)
    return names


def referenced(text: str) -> set[str]:
    """The metric names in `text` (not a pattern such as eventmail_replica_*)."""
    return set(re.findall(r"\b(?:eventmail|process)_[a-z0-9_]+\b(?!\*)", text))


def test_every_documented_metric_exists_and_every_metric_is_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc[doc.index("## Metrics"):]
    families = {f.name for f in REGISTRY.collect()}
    named = referenced(section)
    assert named <= known_names(), named - known_names()
    undocumented = {f for f in families if f not in named and f + "_total" not in named}
    assert not undocumented


def test_the_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    used = set().union(*(referenced(e) for e in exprs))
    assert used and used <= known_names(), used - known_names()
    variables = json.dumps(dashboard.get("templating", {}))
    assert referenced(variables) <= known_names()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))  # Grafana tells panels apart by id


def test_the_alert_rules_use_only_metrics_that_exist() -> None:
    for path in (ALERTS, ALERT_TESTS):
        used = referenced(path.read_text())
        assert used and used <= known_names(), (path.name, used - known_names())


@needs_promtool
def test_promtool_checks_and_unit_tests_the_alert_rules(tmp_path: Path) -> None:
    check = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([str(PROMTOOL), "test", "rules", ALERT_TESTS.name], capture_output=True, text=True,
                          timeout=120, cwd=ALERT_TESTS.parent)
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_registry_has_no_series_for_unknown_label_values() -> None:
    """Values from elsewhere outside the known sets are counted as "other", not as themselves."""
    from eventmail import metrics

    metrics.smtp_rejected("mx", "a reason nobody listed")
    metrics.junk_verdict("some:new-method", True)
    metrics.login_succeeded("gopher")
    text = generate_latest(REGISTRY).decode()
    assert "a reason nobody listed" not in text and "some:new-method" not in text and "gopher" not in text
    assert value(samples(text), "eventmail_smtp_rejects_total", role="mx", reason="other") >= 1
