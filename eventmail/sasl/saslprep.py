"""SASLprep (RFC 4013), the stringprep profile for user names and passwords, on the stdlib."""

from __future__ import annotations

import stringprep
import unicodedata

__all__ = ["SaslPrepError", "saslprep"]


class SaslPrepError(ValueError):
    """The string contains a character SASLprep prohibits, or breaks the bidi rule."""


# RFC 3454 §6 "prohibited output" tables that RFC 4013 §2.3 lists. C.1.2 (non-ASCII space) is
# absent: it was mapped to SPACE in step 1, so it can no longer occur.
_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space characters
    stringprep.in_table_c21,  # ASCII control characters
    stringprep.in_table_c22,  # non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate code points
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)

# stringprep's tables are Unicode 3.2 (RFC 3454 §1.2 fixes the version), and so must the
# normalisation be: `unicodedata.normalize` would use the interpreter's newer Unicode.
_UCD_3_2 = unicodedata.ucd_3_2_0


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare `text` per RFC 4013; raise SaslPrepError on prohibited output.

    `allow_unassigned=False` is the rule for stored strings (a password being set); True is the
    rule for queries (a password being checked). RFC 4013 §2.5 / RFC 3454 §7.
    """
    # RFC 4013 §2.1 mapping: non-ASCII space (C.1.2) to SPACE, "commonly mapped to nothing"
    # (B.1) to nothing.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # RFC 4013 §2.2: Unicode normalisation form KC.
    normalised = _UCD_3_2.normalize("NFKC", mapped)
    if not normalised:
        return normalised
    for ch in normalised:
        # RFC 4013 §2.3: prohibited output.
        if any(table(ch) for table in _PROHIBITED):
            raise SaslPrepError(f"prohibited character U+{ord(ch):04X}")
        # RFC 4013 §2.5 / RFC 3454 §7: unassigned code points only in queries.
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SaslPrepError(f"unassigned code point U+{ord(ch):04X}")
    # RFC 4013 §2.4 / RFC 3454 §6: bidirectional characters.
    has_ral = any(stringprep.in_table_d1(ch) for ch in normalised)
    if has_ral:
        if any(stringprep.in_table_d2(ch) for ch in normalised):
            raise SaslPrepError("string mixes RandALCat and LCat characters")
        if not (stringprep.in_table_d1(normalised[0]) and stringprep.in_table_d1(normalised[-1])):
            raise SaslPrepError("RandALCat string must start and end with a RandALCat character")
    return normalised
