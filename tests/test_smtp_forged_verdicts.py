"""What a sender wrote as our verdict is removed before delivery (RFC 8601 §5): our Authentication-Results and the junk filter's field, folded lines and all."""

from eventmail.smtp.analysis import strip_forged_verdicts


def test_our_verdicts_go_and_everything_else_stays() -> None:
    raw = (
        b"Authentication-Results: MX.example.test; spf=pass\r\n"
        b"Received: from a\r\n"
        b"X-Eventmail-Junk: accept;\r\n\tmethod=reputation\r\n"
        b"Authentication-Results: other.test; dkim=pass\r\n"
        b"authentication-results:  mx.example.test ;\r\n dmarc=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Eventmail-Junk: in the body stays\r\n"
    )
    assert strip_forged_verdicts(raw, "mx.example.test") == (
        b"Received: from a\r\n"
        b"Authentication-Results: other.test; dkim=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Eventmail-Junk: in the body stays\r\n"
    )
    clean = b"Subject: hi\r\n\r\nbody\r\n"
    assert strip_forged_verdicts(clean, "mx.example.test") is clean  # nothing to cut: not copied
