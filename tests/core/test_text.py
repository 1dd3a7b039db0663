"""printable: text from files and model files cannot break a log line or drive the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeleuk.core.text import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("fake.bmp\nINFO watch: x.bmp: ALL", "fake.bmp\\nINFO watch: x.bmp: ALL"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[2J\x07", "\\x1b[2J\\x07"),
        ("csi\x9b31m del\x7f", "csi\\x9b31m del\\x7f"),
        ("bidi\u202etxt.exe", "bidi\\u202etxt.exe"),
        ("line\u2028sep", "line\\u2028sep"),
        ("Zelle café 細胞 ok.bmp", "Zelle café 細胞 ok.bmp"),
        ("", ""),
    ],
)
def test_printable_escapes_controls_and_keeps_text(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_takes_any_object_and_can_keep_line_breaks() -> None:
    assert printable(Path("a\nb.bmp")) == "a\\nb.bmp"
    assert printable("head\nname\x1b.bmp", keep_newlines=True) == "head\nname\\x1b.bmp"
