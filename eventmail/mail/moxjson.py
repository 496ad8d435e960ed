"""Mox's JSON shapes of a stored message — webhook.Structure, NameAddress lists, the envelope fields, the first text and HTML — and its message ids; shared by the webapi and the webhooks.

Field names and value forms are those of Mox's Go types (webhook/webhook.go, webapi/webapi.go),
marshalled by Go's encoding/json: empty lists are `[]`, an absent time is `null`, times are
RFC 3339 with the fraction's trailing zeros dropped (Go's time.RFC3339Nano).
"""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

# Mox reads at most 1 MB of a part's text into MessageGet's and the incoming webhook's Text and
# HTML (webapi.Message, webhook.Incoming).
TEXT_LIMIT = 1024 * 1024
UID_BITS = 32  # RFC 9051 §2.3.1.1: a UID is a 32-bit number


def message_id(mailbox_id: int, uid: int) -> int:
    """The webapi's MsgID of a message: its mailbox id and UID in one number (a move changes it)."""
    return (mailbox_id << UID_BITS) | uid


def split_message_id(msg_id: int) -> tuple[int, int]:
    return msg_id >> UID_BITS, msg_id & ((1 << UID_BITS) - 1)


def go_time(seconds: float) -> str:
    """A moment as Go's encoding/json writes a time.Time in UTC: RFC 3339, fraction without
    trailing zeros, "Z"."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat()
    main, _, rest = text.partition("+")
    if "." in main:
        main = main.rstrip("0").rstrip(".")
    return main + "Z" if rest else text


def parse(raw: bytes) -> Message:
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def structure(part: Message) -> dict[str, Any]:
    """Mox's webhook.Structure of a part."""
    params = {str(k).lower(): str(v) for k, v in (part.get_params() or [])[1:]}
    disposition = part.get_content_disposition() or ""
    # Only a multipart has Parts in Mox's form; an attached message (message/rfc822, which Python
    # holds as a one-part payload) is a leaf whose size is that of the message.
    multipart = part.get_content_maintype() == "multipart"
    parts = [structure(p) for p in part.iter_parts()] if isinstance(part, EmailMessage) and multipart else []
    size = 0
    if not part.is_multipart():
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
    elif not multipart:
        inner = part.get_payload()
        try:
            size = sum(len(m.as_bytes(policy=email.policy.SMTP)) for m in inner if isinstance(m, Message)) \
                if isinstance(inner, list) else 0
        except (ValueError, LookupError, TypeError, email.errors.MessageError):
            size = 0  # an attached message Python cannot write back: its size is unknown
    return {
        "ContentType": part.get_content_type(),
        "ContentTypeParams": params,
        "ContentID": str(part.get("Content-ID", "")),
        "ContentDisposition": disposition.lower(),
        "Filename": part.get_filename() or "",
        "DecodedSize": size,
        "Parts": parts,
    }


def addresses(msg: Message, name: str) -> list[dict[str, str]]:
    """A header field's addresses as Mox's []NameAddress."""
    out = []
    for display, addr in email.utils.getaddresses([str(v) for v in msg.get_all(name, [])]):
        if addr:
            out.append({"Name": display, "Address": addr})
    return out


def readable_text(msg: EmailMessage, subtype: str) -> str:
    """The message's first text/`subtype` part, decoded, at most TEXT_LIMIT characters, with "\\n" line ends."""
    body = msg.get_body(preferencelist=(subtype,))
    if body is None or body.get_content_type() != f"text/{subtype}":
        return ""
    try:
        content = body.get_content()
    except (LookupError, ValueError):
        return ""
    text = content if isinstance(content, str) else ""
    return text[:TEXT_LIMIT].replace("\r\n", "\n")


def date(msg: Message) -> str | None:
    """The Date field as Go writes a *time.Time (with the field's own offset), None when absent or unreadable."""
    if not msg.get("Date"):
        return None
    try:
        dt = email.utils.parsedate_to_datetime(str(msg["Date"]))
    except (TypeError, ValueError):
        return None
    return dt.isoformat().replace("+00:00", "Z")


def message_json(raw: bytes) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The webapi's MessageGet parts of a message: its Message object, its Structure, and the
    address of its From (for Meta.MsgFrom). Parses: run it off the event loop."""
    msg = parse(raw)
    assert isinstance(msg, EmailMessage)
    refs = " ".join(str(v) for v in msg.get_all("References", [])).split()
    in_reply_to = str(msg.get("In-Reply-To", "")).strip()
    if in_reply_to and in_reply_to not in refs:
        refs = [in_reply_to, *refs]
    from_ = addresses(msg, "From")
    message = {
        "From": from_, "To": addresses(msg, "To"), "CC": addresses(msg, "Cc"), "BCC": addresses(msg, "Bcc"),
        "ReplyTo": addresses(msg, "Reply-To"), "MessageID": str(msg.get("Message-ID", "")).strip(),
        "References": refs, "Date": date(msg), "Subject": str(msg.get("Subject", "")),
        "Text": readable_text(msg, "plain"), "HTML": readable_text(msg, "html"),
    }
    return message, structure(msg), from_[0]["Address"] if from_ else ""
