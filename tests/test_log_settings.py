"""[log]: JSON lines and per-area levels in a real `eventmail serve`, and the table's checks."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

import pytest

from eventmail.config import ConfigError, parse

from .mailserver import MailServer
from .test_config import GOOD


def test_json_lines_and_area_levels(tmp_path: Path) -> None:
    s = MailServer(tmp_path, kinds=("smtp", "imap"),
                   extra_config='[log]\nformat = "json"\n[log.levels]\nimap = "warning"\n')
    s.init()
    s.start()
    try:
        with smtplib.SMTP("127.0.0.1", s.ports["smtp"], timeout=30) as c:
            c.ehlo("client.example")
            assert c.mail("someone@remote.test")[0] == 250
            assert c.rcpt("nobody@elsewhere.test")[0] >= 500
        s.wait_log("relaying to")
    finally:
        s.stop()
    records = [json.loads(line) for line in s.log_lines if line.startswith("{")]
    assert records, s.log_lines
    for r in records:
        assert set(r) >= {"time", "level", "logger", "message"}
    # Every log line is one JSON object (the port lines are the CLI's own output, not logs).
    logs = [line for line in s.log_lines if "port" not in line and not line.startswith("stop with")]
    assert all(line.startswith("{") for line in logs), logs
    assert any(r["logger"].startswith("eventmail.smtp") for r in records)
    # IMAP's info lines are below its area's level: none (the listener's own start line is serve's).
    assert not any(r["logger"].startswith("eventmail.imap") and r["level"] == "info" for r in records)


@pytest.mark.parametrize("table, error", [
    ('[log]\nformat = "xml"\n', "log.format"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ('[log]\n[log.levels]\nsmpt = "debug"\n', "log.levels.smpt: unknown area"),
    ('[log]\ncolour = true\n', "log.colour"),
])
def test_bad_log_tables_name_the_key(tmp_path: Path, table: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(GOOD + table, tmp_path)
    assert error in str(info.value)
    assert parse(GOOD + '[log]\nformat = "json"\n[log.levels]\nsmtp = "debug"\n', tmp_path).log.levels == (
        ("smtp", "debug"),)
