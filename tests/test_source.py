"""Splitting a stream into lines: the same lines, numbers and sizes however it arrives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulkpatch.source import _Lines


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    st.lists(st.integers(1, 50), min_size=1, max_size=8),
    st.booleans(),
)
def test_lines_do_not_depend_on_how_the_input_is_cut(
    lines: list[bytes], cuts: list[int], ends_with_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if ends_with_newline and lines else b"")
    splitter = _Lines()
    got = []
    at = 0
    for n in range(len(data)):
        size = cuts[n % len(cuts)]
        if at >= len(data):
            break
        got += splitter.feed(data[at : at + size])
        at += size
    got += splitter.end()

    *complete, last = data.split(b"\n")
    expected = [(number, line, len(line) + 1) for number, line in enumerate(complete, 1)]
    if last:
        expected.append((len(complete) + 1, last, len(last)))
    assert got == expected
