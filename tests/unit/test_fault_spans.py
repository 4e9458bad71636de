"""The fault tests' span log is read while workers append to it."""

from __future__ import annotations

from pathlib import Path

from tests.apps.faults import read_cron_fires, read_spans


def test_a_line_still_being_appended_is_left_for_the_next_read(tmp_path: Path) -> None:
    """Regression: a poll of the log saw the first part of a line a worker was appending
    (``not enough values to unpack``) and failed a failover test mid-run."""
    spans = tmp_path / "spans.log"
    spans.write_text("start 7 1 m1 100 1.5 work\ncron 8 2026-12-07T20:00:00 100 2.5\nstart 9 1")
    assert [(s.job_id, s.marker, s.end) for s in read_spans(spans)] == [(7, "m1", None)]
    assert read_cron_fires(spans) == [(8, "2026-12-07T20:00:00", 2.5)]
    with spans.open("a") as out:
        out.write(" m2 100 3.5 work\nend 9 1 m2 100 4.5 work\n")
    assert [(s.job_id, s.end) for s in read_spans(spans)] == [(7, None), (9, 4.5)]
