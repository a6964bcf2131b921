"""The one rule for showing text that came from outside (a client's request line, a file name, a run name) on a
terminal or in a log: every character a terminal would act on is made visible, printable text (accents, CJK) is kept."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with control characters (ESC, CR, BEL...), bidirectional overrides and other invisible format
    characters as \\xNN / \\uNNNN, and bytes that were not UTF-8 in a file name (surrogate escapes) as \\xNN.
    Print it as rich `Text` (not a markup string) to show it literally."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)
