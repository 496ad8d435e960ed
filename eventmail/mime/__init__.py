"""MIME parsing done once at delivery (structure, envelope, offsets) and its IMAP renderings."""

from .imapform import decode_part, extract_section, imap_string, render_bodystructure, render_envelope
from .structure import DEFAULT_LIMITS, MimeLimits, parse_structure

__all__ = [
    "DEFAULT_LIMITS",
    "MimeLimits",
    "decode_part",
    "extract_section",
    "imap_string",
    "parse_structure",
    "render_bodystructure",
    "render_envelope",
]
