"""Starting the SMTP server: `serve --config` names the bad key, [limits] is validated, `make run` starts localserve."""

import os
import shutil
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from eventmail.config import ConfigError, ServerLimits, parse

from .conftest import ROOT
from .mailserver import free_port, started_lines, stored_messages

BASE = """
hostname = "mail.example.test"
data_dir = "data"
key_file = "master.key"
[tls]
cert = "cert.pem"
key = "key.pem"
[[listener]]
kind = "smtp"
address = "127.0.0.1"
port = 2525
"""


def test_limits_have_safe_defaults_and_can_be_set(tmp_path: Path) -> None:
    assert parse(BASE, tmp_path).limits == ServerLimits(50, 300.0, 5, 20, tls_handshake_timeout=30.0)
    text = BASE + ("[limits]\nconnections_per_ip = 4\nidle_timeout = 2.5\nlogin_failures_before_delay = 1\n"
                   "tls_handshake_timeout = 3\n")
    assert parse(text, tmp_path).limits == ServerLimits(4, 2.5, 1, 20, tls_handshake_timeout=3.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("colour = 1", "limits.colour: unknown setting"),
        ("connections_per_ip = 0", "limits.connections_per_ip: must be at least 1"),
        ('connections_per_ip = "5"', "limits.connections_per_ip: expected int, got str"),
        ("idle_timeout = 0", "limits.idle_timeout: expected a number of seconds above 0"),
        ("idle_timeout = true", "limits.idle_timeout: expected a number of seconds above 0"),
        ("tls_handshake_timeout = 0", "limits.tls_handshake_timeout: expected a number of seconds above 0"),
        ("login_failures_before_delay = 0", "limits.login_failures_before_delay: must be at least 1"),
        ("login_failures_before_delay = 9\nlogin_failures_before_refusal = 3",
         "limits.login_failures_before_refusal: must be at least login_failures_before_delay"),
    ],
)
def test_limit_mistakes_are_named_by_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(BASE + "[limits]\n" + table + "\n", tmp_path)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("port = 2525", 'port = "2525"'), "listener[0].port: expected int"),
        (('kind = "smtp"', 'kind = "smtps"'), "listener[0].kind: 'smtps' is not one of"),
        (('hostname = "mail.example.test"', ""), "hostname: missing"),
        (("[tls]", "[limits]\nidle_timeout = -1\n[tls]"), "limits.idle_timeout"),
    ],
)
def test_serve_refuses_a_bad_config_naming_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    config = tmp_path / "eventmail.toml"
    config.write_text(BASE.replace(*change, 1))
    p = subprocess.run([sys.executable, "-m", "eventmail", "serve", "--config", str(config)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode != 0
    assert key in p.stderr and str(config) in p.stderr, p.stderr


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "eventmail").exists(),
                    reason="needs make and the project's .venv (make venv)")
def test_make_run_starts_localserve_and_mail_goes_in(tmp_path: Path) -> None:
    ports = {k: free_port() for k in ("smtp", "submission", "submissions", "imap", "imaps", "http")}
    args = " ".join(f"--{k}-port={v}" for k, v in ports.items()) + " --password pw-make-run --dns 127.0.0.1:9"
    data = tmp_path / "run-data"
    # -o: take the venv as made (the test runs inside it); its own session, so the stop reaches eventmail.
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "run", f"RUN_DIR={data}", f"RUN_ARGS={args}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        text = "".join(started_lines(proc))
        assert f"MX (SMTP)                127.0.0.1 port {ports['smtp']}" in text, text
        assert f"port {ports['submission']}" in text and f"port {ports['submissions']}" in text
        assert "you@localhost" in text and "password: pw-make-run" in text
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as s:
            s.login("you@localhost", "pw-make-run")
            s.sendmail("you@localhost", ["someone@example.org"],
                       b"From: you@localhost\r\nSubject: leaves nowhere\r\n\r\nhi\r\n")
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
            s.sendmail("friend@example.org", ["you@localhost"], b"From: friend@example.org\r\nSubject: came in\r\n\r\nhi\r\n")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    inbox = b"\n".join(stored_messages(data, data / "keys" / "master.key", "you"))
    assert b"leaves nowhere" in inbox  # localserve delivers every outgoing message locally
    assert b"came in" in inbox


def test_localserve_default_ports() -> None:
    """The issue's defaults: MX 1025, submission 1587 and 1465, IMAP 1143 and 1993, HTTP 1080."""
    p = subprocess.run([sys.executable, "-m", "eventmail", "localserve", "--help"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    help_text = " ".join(p.stdout.split())
    for flag, port in (("smtp", 1025), ("submission", 1587), ("submissions", 1465), ("imap", 1143),
                       ("imaps", 1993), ("http", 1080)):
        assert f"{flag} port (default {port})" in help_text.replace("HTTP port", "http port"), (flag, help_text)


def test_transports_from_the_config(tmp_path: Path) -> None:
    """A smarthost without a port is a submission server (587); routes by exact domain; the
    password from a file beside the config; and the TLS each relay gets."""
    from eventmail.smtp.attempt import Auth
    from eventmail.smtp.outbound import Smarthost
    from eventmail.smtp.tlspolicy import TlsMode

    (tmp_path / "relay.pw").write_text("s3cret relay password\n")
    cfg = parse('smarthost = "smtp.provider.test"\nsmarthost_user = "me"\nsmarthost_password_file = "relay.pw"\n'
                + BASE + '[[route]]\ndomain = "Partner.TEST."\nsmarthost = "[::1]:2526"\n', tmp_path)
    assert cfg.smarthost is not None and (cfg.smarthost.host, cfg.smarthost.port) == ("smtp.provider.test", 587)
    assert (cfg.smarthost.user, cfg.smarthost.password) == ("me", "s3cret relay password")
    assert [(d, r.host, r.port) for d, r in cfg.routes] == [("partner.test", "::1", 2526)]
    assert Smarthost("h", 587, Auth("me", "pw")).tls().mode is TlsMode.PKIX  # a password: verified TLS
    assert Smarthost("h", 587).tls().mode is TlsMode.OPPORTUNISTIC
    assert Smarthost("h", 465).tls().implicit


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('smarthost = "a b"', "smarthost: 'a b' is not host or host:port"),
        ('smarthost = "host:smtp"', "smarthost: 'host:smtp': the port is not a number"),
        ('smarthost = "host:70000"', "smarthost: 'host:70000': port out of range"),
        ('smarthost = "host"\nsmarthost_user = "me"', "give both or neither"),
        ('smarthost = "host"\nsmarthost_user = "me"\nsmarthost_password_file = "nope"', "smarthost_password_file:"),
        ('smarthost_user = "me"', "given without a smarthost"),
    ],
)
def test_transport_mistakes_are_one_line_errors(tmp_path: Path, settings: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(settings + "\n" + BASE, tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
