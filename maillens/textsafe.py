"""Log text is attacker-controlled: make it safe to print and to emit as JSON.

A HELO can carry ``\\x1b]0;title\\x07`` or a bidi override; printed raw it would
retitle a terminal or reorder what the eye reads.  Every place that writes log
text for a person (``parse``, ``explain``, ``tail``) or as JSON Lines goes
through here.
"""

from __future__ import annotations

import re

#: C0 controls (tab included: it moves the cursor), DEL, C1 controls, bidi and
#: line/paragraph separators -- anything that can move the cursor, start an
#: escape sequence or reorder what the eye sees.
UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(text: str) -> str:
    """``text`` with every unsafe character replaced by a visible escape."""
    return UNSAFE_RE.sub(lambda m: _escape(m.group(0)), text)


def json_safe(line: str) -> str:
    """A JSON line with C1 and bidi characters escaped as ``\\uNNNN``.

    ``json.dumps(ensure_ascii=False)`` already escapes C0, but lets U+009B (a
    one-character CSI on some terminals) and bidi overrides through; escaping
    them keeps the JSON equal in meaning and safe on a terminal.
    """
    return UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", line)
