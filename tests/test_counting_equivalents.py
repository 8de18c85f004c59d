"""The string-search stand-ins for pflogsumm's costliest regexes give the regexes' answers.

``counting`` copies pflogsumm's patterns; two of them cost more than all the
rest of a reject line's counting (a lazy prefix that backtracks, a keyword
search without a literal prefix), so they are done with ``str.find``.  These
tests hold the stand-ins to the very regexes they replace, on text built from
the pieces that make them branch.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from maillens.counting import _REJ_KW, _RJ_REASON, reject_keyword_ends, reject_reason

_PIECES = st.sampled_from([": ", "; ", ",", ";", ":", " ", "[", "]", "] ", "[x] ", "[10.0.0.1] ", "a", "Client host",
                           " reject: ", " reject_warning: ", " hold: ", " discard: ", "reject", "hold", "\n", "é",
                           "554 5.7.1 ", "blocked using zen.spamhaus.org"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_reject_reason_equals_the_regex(text: str) -> None:
    assert reject_reason(text) == _RJ_REASON.sub(r"\1", text, count=1)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_reject_keyword_ends_equal_finditer(text: str) -> None:
    assert reject_keyword_ends(text) == [m.end() for m in _REJ_KW.finditer(text)]


def test_overlapping_keywords_are_found_as_finditer_finds_them() -> None:
    text = "x reject: hold: y discard: z"
    assert reject_keyword_ends(text) == [m.end() for m in _REJ_KW.finditer(text)] == [10, 27]
