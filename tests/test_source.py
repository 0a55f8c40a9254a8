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


async def test_bad_bytes_after_the_head_fail_their_line_and_the_rest_is_read() -> None:
    import io

    from bulkpatch.jobs import BadLine, Job
    from bulkpatch.source import HEAD, read_jobs

    job = b'{"id": "o1", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}'
    # A blank first line longer than the head, then a NUL and a byte no UTF-8 has.
    data = b" " * (HEAD + 10) + b"\n" + job.replace(b"x", b"\x00") + b"\n" + job.replace(b"x", b"\xff") + b"\n" + job + b"\n"
    items = [item async for item in read_jobs(io.BytesIO(data))]
    assert [type(item) for item in items] == [BadLine, BadLine, Job]
    assert [item.line for item in items] == [2, 3, 4]
    assert all(item.error.line == item.line for item in items if isinstance(item, BadLine))
