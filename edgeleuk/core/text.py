r"""Text from files and model files made safe to print: no line breaks, no terminal escape codes.

File names and the strings a model file carries come from whoever wrote them. Printed raw,
a name with a line break forges a log line (``fake.bmp: ALL (p=0.999)``) and an escape code
(``\x1b[2J``) drives the terminal. :func:`printable` is the one place such text is made
inert before it reaches a log line or the terminal; CSV cells have their own rules
(:mod:`edgeleuk.io.csvcells`).
"""

from __future__ import annotations

import unicodedata

# Control characters (C0, DEL, C1), format characters that reorder or hide text on screen
# (bidi overrides, zero-width marks) and the Unicode line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _line(text: str) -> str:
    if text.isprintable():  # the common case, in C: nothing to escape
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def printable(text: object, *, keep_newlines: bool = False) -> str:
    r"""``str(text)`` with every control or invisible formatting character written as an escape.

    A line break becomes a backslash and ``n``, ESC becomes ``\x1b``; printable text,
    accents, spaces and other scripts pass unchanged.

    Args:
        text: Anything; it is converted with ``str`` first (a ``Path`` prints as its path).
        keep_newlines: Leave ``\n`` as a line break (multi-line messages edgeleuk wrote itself).
    """
    text = str(text)
    if keep_newlines:
        return "\n".join(_line(part) for part in text.split("\n"))
    return _line(text)
