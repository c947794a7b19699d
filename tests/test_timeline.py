"""app.timeline's window arithmetic and utils.cli's --opts splitting (pure functions, fast)."""

from __future__ import annotations

import pytest

from app.timeline import Span, parse_span, plan_windows, to_frames
from utils.cli import split_opts
from utils.errors import UserError


def test_parse_span():
    assert parse_span("2s", "--window") == Span(2.0, "s")
    assert parse_span("2.5", "--window") == Span(2.5, "s")
    assert parse_span("64f", "--window") == Span(64.0, "f")
    assert parse_span("10 frames", "--stride") == Span(10.0, "f")
    for bad, msg in (("abc", "give seconds"), ("0s", "must be > 0"), ("2.5f", "whole number"), ("-1", "give seconds")):
        with pytest.raises(UserError, match=msg):
            parse_span(bad, "--window")


def test_to_frames_needs_a_frame_rate_for_seconds():
    assert to_frames(Span(2.0, "s"), 30.0, "--window", "v.mp4") == 60
    assert to_frames(Span(64, "f"), None, "--window", "dir") == 64
    with pytest.raises(UserError, match="dir: its frame rate is unknown.*64f.*--fps"):
        to_frames(Span(2.0, "s"), None, "--window", "dir")


@pytest.mark.parametrize("n,w,s", [(1800, 120, 60), (1800, 120, 120), (1801, 120, 120), (100, 100, 7), (1000, 64, 1)])
def test_windows_cover_every_frame(n, w, s):
    spans = plan_windows(n, w, s)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(b - a == w for a, b in spans)
    covered = set()
    for a, b in spans:
        covered.update(range(a, b))
    assert covered == set(range(n))
    starts = [a for a, _ in spans]
    assert starts == sorted(set(starts))  # increasing, no repeated window


def test_stride_longer_than_the_window_samples_sparsely():
    assert plan_windows(10, 3, 4) == [(0, 3), (4, 7), (7, 10)]  # the last window still ends at the end


def test_window_longer_than_the_input():
    with pytest.raises(UserError, match="clip.mp4: --window 90s is 2700 frames, longer than the input's 1800 frames"):
        plan_windows(1800, 2700, 30, "clip.mp4", "90s")


@pytest.mark.parametrize(
    "argv,rest,opts",
    [
        (["--opts", "a=1", "b=2", "video.mp4"], ["video.mp4"], ["a=1", "b=2"]),
        (["v.mp4", "--opts", "a=1", "--topk", "3"], ["v.mp4", "--topk", "3"], ["a=1"]),
        (["--opts=a=1", "x", "--opts", "b=2"], ["x"], ["a=1", "b=2"]),
        (["--opts", "v.mp4"], ["v.mp4"], []),
        (["a.mp4", "b=c.mp4"], ["a.mp4", "b=c.mp4"], []),
    ],
)
def test_opts_stop_at_the_first_word_without_equals(argv, rest, opts):
    assert split_opts(argv) == (rest, opts)
