"""RFC 5321 §4.1.2 paths and ESMTP parameters, with RFC 6531 UTF-8 addresses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.smtp import MailParams, SmtpError, split_address, valid_domain
from eventmail.smtp.address import (
    MailOffer,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    split_path_argument,
)

OFFER = MailOffer(extended=True, max_size=1000, eightbitmime=True, smtputf8=True, requiretls=True, auth=True)


def forward(raw: str, utf8: bool = True) -> str:
    return parse_path(raw.encode(), reverse=False, utf8=utf8)


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("user@example.org", "user@example.org"),
        ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
        ("!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~@example.org"),
        ('"john doe"@example.org', '"john doe"@example.org'),
        ('"a\\"b\\\\c"@example.org', '"a\\"b\\\\c"@example.org'),
        ('"a>b"@example.org', '"a>b"@example.org'),
        ('"@"@example.org', '"@"@example.org'),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"),
        ("user@[x-tag:opaque]", "user@[x-tag:opaque]"),
        ("@relay.example,@other.example:user@example.org", "user@example.org"),  # source route dropped
        ("jürgen@bücher.example", "jürgen@bücher.example"),
        ("用户@例子.广告", "用户@例子.广告"),
        ('"ü x"@example.org', '"ü x"@example.org'),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("postmaster", "postmaster"),
        ("PostMaster", "PostMaster"),
        ("a@localhost", "a@localhost"),
        ("a@123.example", "a@123.example"),
    ],
)
def test_valid_forward_paths(raw: str, address: str) -> None:
    assert forward(raw) == address


@pytest.mark.parametrize(
    "raw",
    [
        "user",
        "@example.org",
        "user@",
        "user@@example.org",
        ".user@example.org",
        "user.@example.org",
        "us..er@example.org",
        "us er@example.org",
        "us(er@example.org",
        '"unterminated@example.org',
        '"a"b@example.org',
        '"\x01"@example.org',
        "user@-example.org",
        "user@example-.org",
        "user@exa_mple.org",
        "user@example..org",
        "user@example.org.",
        "user@[192.0.2.256]",
        "user@[192.0.2.01]",
        "user@[IPv6:2001:db8::g]",
        "user@[192.0.2.1",
        "user@" + "a" * 64 + ".example",
        "user@" + ".".join(["a" * 60] * 5),
        "u\x00ser@example.org",
        "@relay.example:user",
        "@bad_relay:user@example.org",
        "user@bü€cher.example",
        "user@ex ample.org",
    ],
)
def test_invalid_forward_paths(raw: str) -> None:
    with pytest.raises(SmtpError) as exc:
        forward(raw)
    assert exc.value.reply.code == 501 and exc.value.reply.enhanced == "5.1.3"


def test_reverse_path_errors_use_sender_code() -> None:
    with pytest.raises(SmtpError) as exc:
        parse_path(b"nobody", reverse=True, utf8=False)
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (501, "5.1.7")
    assert parse_path(b"", reverse=True, utf8=False) == ""
    with pytest.raises(SmtpError):
        parse_path(b"", reverse=False, utf8=False)
    with pytest.raises(SmtpError):
        parse_path(b"postmaster", reverse=True, utf8=False)  # only RCPT TO:<Postmaster>


def test_non_ascii_needs_smtputf8() -> None:
    raw = "jürgen@example.org".encode()
    with pytest.raises(SmtpError) as exc:
        parse_path(raw, reverse=True, utf8=False)
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (550, "5.6.7")  # RFC 6531 §3.5: MAIL
    with pytest.raises(SmtpError) as exc:
        parse_path(raw, reverse=False, utf8=False)
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (553, "5.6.7")  # RCPT
    with pytest.raises(SmtpError) as exc:
        parse_path(b"j\xfcrgen@example.org", reverse=False, utf8=True)  # Latin-1, not UTF-8
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (501, "5.6.7")


def test_path_length_limit() -> None:
    local = "a" * 64
    ok = f"{local}@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 50  # 244 octets: fits in 256 with <>
    assert forward(ok) == ok
    with pytest.raises(SmtpError) as exc:
        forward("a" * 200 + "@" + "b" * 55 + ".example")
    assert exc.value.reply.text == "Path too long"


def test_domain_length_in_a_labels() -> None:
    assert valid_domain("ü" * 20 + ".example")
    assert not valid_domain("ü" * 60 + ".example")  # its A-label is longer than 63 octets
    assert valid_domain(".".join(["a" * 63] * 3) + "." + "b" * 63)  # 255 octets
    assert not valid_domain(".".join(["a" * 63] * 4) + ".b")  # 257 octets
    assert not valid_domain(".".join(["a" * 63] * 3) + "." + "b" * 64)


def test_split_path_argument() -> None:
    assert split_path_argument(b"<a@b>", reverse=True) == (b"a@b", [])
    assert split_path_argument(b" <a@b>  SIZE=1  BODY=7BIT", reverse=True) == (
        b"a@b",
        [b"SIZE=1", b"BODY=7BIT"],
    )
    assert split_path_argument(b'<"x>y"@b> SMTPUTF8', reverse=True) == (b'"x>y"@b', [b"SMTPUTF8"])
    assert split_path_argument(b'<"x\\">"@b>', reverse=True) == (b'"x\\">"@b', [])
    for bad in (b"a@b", b"<a@b", b"<a@b>x", b'<"a@b>'):
        with pytest.raises(SmtpError):
            split_path_argument(bad, reverse=False)


def test_mail_params() -> None:
    assert parse_mail_params([], OFFER) == MailParams()
    params = parse_mail_params(
        [b"size=1000", b"body=7bit", b"smtputf8", b"RequireTLS", b"AUTH=a+2Bb+3Dc@d.example"], OFFER
    )
    assert params == MailParams(
        size=1000, body="7BIT", smtputf8=True, requiretls=True, auth="a+b=c@d.example"
    )
    assert parse_mail_params([b"AUTH=<>"], OFFER).auth == "<>"


@pytest.mark.parametrize(
    ("items", "code"),
    [
        ([b"SIZE=1001"], 552),
        ([b"SIZE="], 501),
        ([b"SIZE=-1"], 501),
        ([b"SIZE=1" + b"0" * 20], 501),
        ([b"SIZE"], 501),
        ([b"BODY=BINARYMIME"], 501),
        ([b"BODY"], 501),
        ([b"SMTPUTF8=1"], 501),
        ([b"REQUIRETLS=yes"], 501),
        ([b"AUTH"], 501),
        ([b"AUTH=a+1"], 501),
        ([b"AUTH=a+0A"], 501),
        ([b"AUTH=\xc3\xa4"], 501),
        ([b"SIZE=1", b"size=2"], 501),
        ([b"-X=1"], 501),
        ([b"X=a=b"], 501),
        ([b"X-UNKNOWN"], 555),
        ([b"NOTIFY=NEVER"], 555),
    ],
)
def test_bad_mail_params(items: list[bytes], code: int) -> None:
    with pytest.raises(SmtpError) as exc:
        parse_mail_params(items, OFFER)
    assert exc.value.reply.code == code


def test_params_not_offered_are_555() -> None:
    closed = MailOffer(
        extended=True, max_size=1000, eightbitmime=False, smtputf8=False, requiretls=False, auth=False
    )
    for item in (b"BODY=8BITMIME", b"SMTPUTF8", b"REQUIRETLS", b"AUTH=<>"):
        with pytest.raises(SmtpError) as exc:
            parse_mail_params([item], closed)
        assert exc.value.reply.code == 555
    helo = MailOffer(
        extended=False, max_size=1000, eightbitmime=True, smtputf8=True, requiretls=True, auth=True
    )
    with pytest.raises(SmtpError) as exc:
        parse_mail_params([b"SIZE=1"], helo)
    assert exc.value.reply.code == 555


def test_rcpt_params() -> None:
    parse_rcpt_params([])
    with pytest.raises(SmtpError) as exc:
        parse_rcpt_params([b"NOTIFY=NEVER"])
    assert exc.value.reply.code == 555


def test_split_address() -> None:
    assert split_address("") == ("", "")
    assert split_address("Postmaster") == ("Postmaster", "")
    assert split_address("a.b@example.org") == ("a.b", "example.org")
    assert split_address('"john \\"j\\" doe"@example.org') == ('john "j" doe', "example.org")
    assert split_address('"@"@example.org') == ("@", "example.org")


atext = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABC0123456789!#$%&'*+-/=?^_`{|}~üß用"))
atom = st.text(atext, min_size=1, max_size=10)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(atoms=st.lists(atom, min_size=1, max_size=4), labels=st.lists(label, min_size=1, max_size=4))
def test_generated_addresses_parse_and_split_back(atoms: list[str], labels: list[str]) -> None:
    local, domain = ".".join(atoms), ".".join(labels)
    address = f"{local}@{domain}"
    assert forward(address) == address
    assert split_address(address) == (local, domain)


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=300), reverse=st.booleans(), utf8=st.booleans())
def test_parse_path_never_raises_anything_but_smtp_error(raw: bytes, reverse: bool, utf8: bool) -> None:
    try:
        address = parse_path(raw, reverse=reverse, utf8=utf8)
    except SmtpError as exc:
        assert exc.reply.code in (501, 550, 553)
    else:
        assert "\r" not in address and "\n" not in address and ">" not in address.split("@")[-1]
