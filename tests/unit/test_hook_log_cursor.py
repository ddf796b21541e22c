"""The log cursor shows each line once and in order, across re-reads that start at a whole second."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from druid_k8s_provider.hooks.log_cursor import LogCursor, split_line, timestamp_key


def test_timestamps_compare_whatever_their_precision() -> None:
    assert timestamp_key("2026-01-01T00:00:01.5Z") > timestamp_key("2026-01-01T00:00:01.123456789Z")
    assert timestamp_key("2026-01-01T00:00:01Z") == timestamp_key("2026-01-01T00:00:01.000000000Z")


def test_split_line_keeps_lines_without_timestamps_whole() -> None:
    assert split_line("2026-01-01T00:00:01.5Z hello world") == ("2026-01-01T00:00:01.5Z", "hello world")
    assert split_line("no timestamp here") == (None, "no timestamp here")


def test_since_time_is_the_cursor_second_truncated() -> None:
    cursor = LogCursor()
    assert cursor.since_time() is None
    cursor.admit("2026-01-01T10:20:30.999Z")
    assert cursor.since_time() == "2026-01-01T10:20:30Z"


@given(
    stamps=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=30).map(sorted),
    reads=st.lists(st.integers(min_value=0, max_value=30), max_size=5),
)
def test_every_line_once_in_order_across_any_rereads(stamps: list[int], reads: list[int]) -> None:
    """Lines share timestamps (several a second); the log is re-read from sinceTime after partial reads."""
    log = [(f"2026-01-01T00:00:0{s // 2}.{s % 2}Z", f"line {i}") for i, s in enumerate(stamps)]
    shown: list[str] = []
    cursor = LogCursor()
    for limit in [*reads, len(log)]:
        cursor.begin_read()
        since = cursor.since_time()
        readable = [entry for entry in log if since is None or entry[0][:19] + "Z" >= since]
        for timestamp, text in readable[: limit if limit < len(readable) else len(readable)]:
            if cursor.admit(timestamp):
                shown.append(text)
        cursor = LogCursor.from_dict(cursor.to_dict())  # as if resumed in another process
    assert shown == [text for _, text in log]
