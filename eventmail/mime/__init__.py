"""MIME parsing done once at delivery (structure, envelope, offsets) and its IMAP renderings."""

from .imapform import decode_part, extract_section, imap_string, render_bodystructure, render_envelope
from .structure import (
    DEFAULT_LIMITS,
    MAX_MIME_DEPTH,
    MimeLimits,
    MimeTooDeep,
    parse_incoming,
    parse_structure,
    structure_depth,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_MIME_DEPTH",
    "MimeLimits",
    "MimeTooDeep",
    "decode_part",
    "extract_section",
    "imap_string",
    "parse_incoming",
    "parse_structure",
    "render_bodystructure",
    "render_envelope",
    "structure_depth",
]
