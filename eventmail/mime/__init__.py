"""MIME parsing done once at delivery (structure, envelope, offsets) and its IMAP renderings."""

from .structure import DEFAULT_LIMITS, MimeLimits, parse_structure

__all__ = ["DEFAULT_LIMITS", "MimeLimits", "parse_structure"]
