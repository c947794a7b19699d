"""utils.progress: the plain lines of logs / nohup / CI (count, rate and time left, checked with a
fake clock), the first estimate not spoilt by start-up, and the terminal bar."""

from __future__ import annotations

import io

from utils.progress import Pace, Progress, duration, failure_summary, rate_text, track


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def plain(total: int, clock: Clock, **kw) -> tuple[Progress, list[str]]:
    lines: list[str] = []
    pace = Pace(kw.pop("every_s", 30.0), clock)
    return Progress(total, "test", "video", write=lines.append, terminal=False, pace=pace, **kw), lines


def test_first_eta_leaves_out_the_start_up():
    """10 s of start-up before the first video, then 0.5 s per video: at 10 % the rate is 2 videos/s
    and 90 videos are left, 45 s (counting from the start would say 0.67 videos/s and 135 s)."""
    clock = Clock()
    p, lines = plain(100, clock)
    clock.t = 10.0
    p.update()
    assert lines == []  # no mark crossed, and less than every_s (30 s) since the start
    for _ in range(9):
        clock.t += 0.5
        p.update()
    assert lines == ["test: 10/100 videos (10 %), 2.0 videos/s, about 45 s left"]
    for _ in range(10):
        clock.t += 1.0  # slower: 19 videos in 14.5 s since the first
        p.update()
    assert lines[-1] == "test: 20/100 videos (20 %), 1.3 videos/s, about 1 min 1 s left"  # 80 / (19 / 14.5) s
    for _ in range(80):
        clock.t += 0.25
        p.update()
    assert len(lines) == 9  # 10 %, 20 %, ... 90 %: the 100 % line is the closing one
    p.close()
    assert lines[-1] == "test: 100/100 videos in 44 s (2.9 videos/s after the first)"  # 44.5 s; 99 in 34.5 s
    p.update()
    p.close()
    assert len(lines) == 10  # closed: nothing more


def test_a_line_every_every_s_between_marks_and_slow_items():
    clock = Clock()
    p, lines = plain(1000, clock, every_s=30.0)
    clock.t = 40.0  # start-up longer than every_s: the first item gets a line, without a rate
    p.update()
    assert lines == ["test: 1/1000 videos (0 %)"]
    clock.t = 60.0
    p.update()
    assert lines == ["test: 1/1000 videos (0 %)"]  # 20 s since the last line
    clock.t = 70.0
    p.update()
    assert lines[-1] == "test: 3/1000 videos (0 %), 15.0 s/video, about 4 h 09 min left"  # 2 in 30 s; 997 x 15 s


def test_batches_count_their_size_and_track_counts_after_use():
    clock = Clock()
    p, lines = plain(64, clock)
    seen = []
    for batch in track([list(range(32)), list(range(32))], p, size=len):
        assert len(batch) == 32
        seen.append(p.done)  # counted once the consumer is done with the batch
        clock.t += 2.0
    assert seen == [0, 32] and p.done == 64
    assert lines == ["test: 32/64 videos (50 %)"]  # one update so far: no rate yet
    p.close()
    assert lines[-1] == "test: 64/64 videos in 4 s (16.0 videos/s after the first)"


def test_disabled_shows_nothing_and_terminal_draws_a_bar():
    clock = Clock()
    p, lines = plain(10, clock, enabled=False)
    p.update(10)
    p.close()
    assert lines == [] and p.done == 0
    stream = io.StringIO()
    bar = Progress(10, "extract", "input", stream=stream, terminal=True)
    bar.update(3)
    bar.update(7)
    bar.close()
    text = stream.getvalue()
    assert "extract" in text and "10/10" in text


def test_formats():
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7500)] == ["0 s", "59 s", "1 min 1 s", "59 min 59 s", "2 h 05 min"]
    assert rate_text(2.0, "video") == "2.0 videos/s" and rate_text(0.25, "window") == "4.0 s/window"


def test_failure_summary_names_the_first_failures_and_counts_the_rest():
    failed = [
        ("a.mp4", "a.mp4: cannot open video (moov atom not found)\nmore detail"),
        ("b.mp4", "cannot open video b.mp4: no frames in b.mp4"),
        ("dir/", "x" * 200),
        ("d.mp4", "bad"),
    ]
    line = failure_summary(failed, 6)
    assert line == (
        "4 of 6 inputs failed: a.mp4 (cannot open video (moov atom not found)), "
        "b.mp4 (cannot open video: no frames in b.mp4), "
        f"dir/ ({'x' * 159}…), and 1 more"
    )
    assert (
        failure_summary(failed[:1], 1, what="videos")
        == "1 of 1 videos failed: a.mp4 (cannot open video (moov atom not found))"
    )


def test_shards_show_progress_lines_when_not_on_a_terminal(tmp_path, capsys):
    """datasets.shards reports through utils.progress: under pytest stderr is not a terminal, so
    plain lines (the closing one with the count) rather than a bar that logs would not show."""
    from datasets.shards import write_shards
    from datasets.synthetic import generate

    generate(tmp_path / "syn", classes=2, videos_per_class=2, val_videos_per_class=1, frames=4, size=16, fmt="frames")
    write_shards(str(tmp_path / "syn" / "train.txt"), str(tmp_path / "syn" / "frames"), str(tmp_path / "s" / "t"))
    err = capsys.readouterr().err
    assert "shards: 2/4 videos (50 %)" in err and "shards: 4/4 videos in " in err
