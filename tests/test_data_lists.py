"""datasets.lists: both list formats, label CSVs, every bad-input message, every shipped list."""

import pytest

from datasets.lists import VideoRecord, detect_format, read_label_csv, read_list
from utils.errors import UserError


def _write(tmp_path, name, text, newline="\n"):
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode())
    return p


def test_frames_and_video_lists(tmp_path):
    frames = _write(tmp_path, "f.txt", "a/b 12 3\n\nanet//x_1 7 0\n")
    assert detect_format(frames) == "frames"
    assert read_list(frames) == [VideoRecord("a/b", 12, 3, 1), VideoRecord("anet//x_1", 7, 0, 3)]
    video = _write(tmp_path, "v.txt", "x.mp4 1\ny.mp4 0\n", newline="\r\n")
    assert detect_format(video) == "video"
    assert read_list(video, num_classes=2) == [VideoRecord("x.mp4", None, 1, 1), VideoRecord("y.mp4", None, 0, 2)]


def test_label_csv(tmp_path):
    crlf = _write(tmp_path, "l.csv", 'id,name\n0,ApplyEyeMakeup\n1,brush hair\n2,"a, b"\n', newline="\r\n")
    assert read_label_csv(crlf) == ["ApplyEyeMakeup", "brush hair", "a, b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a 1 2\nb 3\n", r"f\.txt:2: this is a frames list .* 2 fields: 'b 3'"),
        ("a 1 2\nb x 3\n", r"f\.txt:2: frame count 'x' is not an integer: 'b x 3'"),
        ("a 1 z\n", r"f\.txt:1: label 'z' is not an integer: 'a 1 z'"),
        ("a.mp4 -1\n", r"f\.txt:1: label -1 is negative"),
        ("a b c d\n", r"f\.txt:1: expected 'dir num_frames label' or 'file label', got 4 fields: 'a b c d'"),
        ("x.mp4 0\ny.mp4 1 2\n", r"f\.txt:2: this is a video list .* 3 fields: 'y.mp4 1 2'"),
        ("\n\n", r"f\.txt: empty list file"),
    ],
)
def test_malformed_list_lines(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_list(_write(tmp_path, "f.txt", text))


def test_label_out_of_range_and_missing_list(tmp_path):
    with pytest.raises(UserError, match=r"f\.txt:2: label 5 is outside the 5 classes .*0\.\.4.*'b 9 5'"):
        read_list(_write(tmp_path, "f.txt", "a 9 4\nb 9 5\n"), num_classes=5)
    with pytest.raises(UserError, match=r"list file not found: .*nope\.txt"):
        read_list(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "text, message",
    [
        ("idx,name\n0,a\n", r"l\.csv:1: the header must be 'id,name', got 'idx,name'"),
        ("id,name\n0,a\n2,b\n", r"l\.csv:3: ids must be 0\.\.C-1 in order; expected 1, got 2"),
        ("id,name\n1,a\n", r"l\.csv:2: ids must be 0\.\.C-1 in order; expected 0, got 1"),
        ("id,name\n0,a,extra\n", r"l\.csv:2: expected two columns 'id,name', got 3"),
        ("id,name\nzero,a\n", r"l\.csv:2: id 'zero' is not an integer"),
        ("id,name\n", r"l\.csv: no classes after the header"),
        ("", r"l\.csv: empty label CSV"),
    ],
)
def test_bad_label_csv(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_label_csv(_write(tmp_path, "l.csv", text))
    with pytest.raises(UserError, match="label CSV not found"):
        read_label_csv(tmp_path / "missing.csv")


def test_duplicate_class_names_are_an_error(tmp_path):
    from datasets.lists import read_label_csv

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("id,name\n0,abseiling\n1,archery\n2,abseiling\n")
    with pytest.raises(UserError, match=r"labels.csv:4: class name 'abseiling' repeats line 2"):
        read_label_csv(csv_path)


def test_duplicate_list_lines_are_accepted_and_said(tmp_path, caplog, monkeypatch):
    import logging

    from datasets.lists import read_list

    monkeypatch.setattr(logging.getLogger("Text4Vis"), "propagate", True)  # setup_logger turns it off
    lst = tmp_path / "l.txt"
    lst.write_text("a 10 0\nb 10 1\na 10 0\n")
    with caplog.at_level("WARNING", logger="Text4Vis"):
        records = read_list(lst)
    assert [r.path for r in records] == ["a", "b", "a"]
    assert "1 line(s) repeat a video listed earlier (first: line 3 repeats line 1, 'a')" in caplog.text
