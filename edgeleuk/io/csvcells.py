r"""How file names and text go into edgeleuk's CSV/JSONL files, and how they come back out.

Torch-free, no dependencies. Two rules, each applied by every writer and undone
by every reader of edgeleuk's own files (``watch`` resuming its CSV, ``report``):

**Names are stored exactly, as valid UTF-8** (:func:`name_to_text` /
:func:`text_to_name`). File names from SMB/NFS shares are often Latin-1 bytes
that are not valid UTF-8; Python lists them with "surrogate escapes"
(``b"caf\xe9.bmp"`` -> ``"caf\udce9.bmp"``), which no UTF-8 file can hold. In
the ``path`` column such a byte is written as the four characters ``\xe9``, and a
backslash in a name is doubled (``\\``), so ``caf\xe9.bmp`` reads as what it is
and maps back to the exact bytes. Every other name (all valid UTF-8 names
without a backslash) is written unchanged. One column is both what a person
reads and the exact name, so the columns stay the same for old and new files.

**Cells are safe in a spreadsheet** (:func:`sheet_cell` / :func:`plain_cell`).
Excel and LibreOffice evaluate a cell that starts with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return (``=HYPERLINK(...)`` in a file name). As OWASP
recommends, such a text cell gets a leading single quote, which the spreadsheet
shows as text; so does a cell that already starts with a quote, so that reading
back (dropping one leading quote before those characters) is exact. Numbers
(``-1.25``) are left as they are: they evaluate to themselves. JSON Lines files
are not meant for spreadsheets and are not quoted; their names are stored as in
the CSV (:func:`name_to_text`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

#: Characters that make a spreadsheet evaluate a cell (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2}|u[dD][89a-fA-F][0-9a-fA-F]{2})")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode gives it
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (possible in Windows names)
        return f"\\u{code:04x}"
    return ch


def name_to_text(name: str) -> str:
    r"""A file name as valid UTF-8 text that maps back exactly (see the module docstring).

    >>> name_to_text("caf\udce9.bmp")
    'caf\\xe9.bmp'
    """
    if "\\" not in name and not any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return name
    return "".join(_escape_char(c) for c in name)


def _unescape(match: re.Match[str]) -> str:
    body = match.group(1)
    if body == "\\":
        return "\\"
    if body[0] == "x":
        return chr(0xDC00 + int(body[1:], 16))
    return chr(int(body[1:], 16))


def text_to_name(text: str) -> str:
    """Undo :func:`name_to_text`: the exact name, with surrogate escapes for non-UTF-8 bytes.

    A backslash not followed by one of the escapes is kept as it is, so names
    written before this encoding existed still read back as written.
    """
    return _ESCAPE.sub(_unescape, text) if "\\" in text else text


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def sheet_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text instead of evaluating (see the module docstring)."""
    if text.startswith(FORMULA_STARTS) and not _is_number(text):
        return _QUOTE + text
    if text.startswith(_QUOTE):
        return _QUOTE + text
    return text


def plain_cell(text: str) -> str:
    """Undo :func:`sheet_cell`: drop the quote it added, keep any other text unchanged."""
    if text.startswith(_QUOTE) and text[1:].startswith((*FORMULA_STARTS, _QUOTE)):
        return text[1:]
    return text


def sheet_row(row: Mapping[str, object]) -> dict[str, str]:
    """:func:`sheet_cell` on every value (None becomes an empty cell)."""
    return {k: "" if v is None else sheet_cell(str(v)) for k, v in row.items()}


def plain_row(row: Mapping[str, str | None]) -> dict[str, str]:
    """:func:`plain_cell` on every value of a row read from an edgeleuk CSV."""
    return {k: plain_cell(v or "") for k, v in row.items() if k is not None}
