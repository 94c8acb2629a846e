"""tools/video_chop.py: a long video streamed into the NUWA-XL hierarchy (segments whose ends are their parents)."""

import json
import os
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from longvideo.tools import video_chop
from longvideo.utils.video_io import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITS = 16


def barcoded_frame(number: int) -> np.ndarray:
    """A 64x64 frame whose top half spells `number` in 16 black/white blocks and whose bottom half has a moving ball."""
    frame = np.full((64, 64, 3), 90, np.uint8)
    for bit in range(BITS):
        row, column = divmod(bit, 8)
        frame[row * 16:(row + 1) * 16, column * 8:(column + 1) * 8] = 255 if number >> bit & 1 else 0
    cv2.circle(frame, (8 + number % 48, 48), 6, (230, 40, 40), -1, cv2.LINE_AA)
    return frame


def read_number(frame: np.ndarray) -> int:
    blocks = [frame[(b // 8) * 16 + 4:(b // 8) * 16 + 12, (b % 8) * 8 + 2:(b % 8) * 8 + 6].mean() for b in range(BITS)]
    return sum(1 << bit for bit, value in enumerate(blocks) if value > 128)


def decode(path):
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def minute_video(tmp_path_factory):
    """One minute at 8 fps: 480 frames."""
    path = str(tmp_path_factory.mktemp("source") / "walk.mp4")
    write_video((np.stack([barcoded_frame(n) for n in range(start, start + 48)]) for start in range(0, 480, 48)), path, 8)
    return path


def test_hierarchy_counts():
    assert video_chop.hierarchy_depth(480, 8) == 3      # 7^3 + 1 = 344 <= 480 < 7^4 + 1
    assert video_chop.hierarchy_depth(3376, 16) == 3    # NUWA-XL's L=16, m=3
    assert video_chop.hierarchy_depth(15, 16) == 0
    with pytest.raises(video_chop.ChopError, match="--L must be at least 3"):
        video_chop.hierarchy_depth(100, 2)


def test_minute_video_gives_the_documented_hierarchy(minute_video, tmp_path):
    folder = video_chop.chop(minute_video, 8, str(tmp_path / "out"), caption="a red ball")
    index = json.load(open(os.path.join(folder, "index.json")))
    assert (index["L"], index["depth"], index["frames"], index["fps"]) == (8, 3, 344, 8.0)
    assert [len(level["segments"]) for level in index["levels"]] == [1, 7, 49]
    assert [level["stride"] for level in index["levels"]] == [49, 7, 1]
    frames_at = {}
    for level in index["levels"]:
        for segment in level["segments"]:
            numbers = [read_number(f) for f in decode(os.path.join(folder, segment["clip"]))]
            assert numbers == segment["frames"] and len(numbers) == 8
            assert open(os.path.join(folder, segment["caption"])).read() == "a red ball"
            frames_at[(level["level"], tuple(numbers))] = numbers
    # Every segment's first and last frames are adjacent frames of its parent segment one level up.
    for level in index["levels"][1:]:
        parents = {n for segment in index["levels"][level["level"] - 2]["segments"] for n in segment["frames"]}
        for segment in level["segments"]:
            assert segment["frames"][0] in parents and segment["frames"][-1] in parents
            assert not parents & set(segment["frames"][1:-1])
    finest = sorted({n for segment in index["levels"][-1]["segments"] for n in segment["frames"]})
    assert finest == list(range(344))
    assert sorted(os.listdir(tmp_path / "out")) == ["walk"]


def test_resampling_halves_the_frames(minute_video, tmp_path):
    folder = video_chop.chop(minute_video, 6, str(tmp_path / "out"), fps=4)
    index = json.load(open(os.path.join(folder, "index.json")))
    assert (index["depth"], index["frames"], index["fps"]) == (3, 126, 4.0)  # 240 frames at 4 fps; 5^3 + 1 = 126
    first = index["levels"][0]["segments"][0]
    assert [read_number(f) for f in decode(os.path.join(folder, first["clip"]))] == [2 * n for n in first["frames"]]


def test_too_short_a_video_is_a_clear_error_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "short.mp4")
    write_video([np.stack([barcoded_frame(n) for n in range(10)])], path, 8)
    with pytest.raises(video_chop.ChopError, match="10 frames at 8 fps are too few for one level of 16-frame segments"):
        video_chop.chop(path, 16, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_command_line(minute_video, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_chop.py"), minute_video, "--L", "25",
                             "--size", "32x32", "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    folder = result.stdout.strip()
    index = json.load(open(os.path.join(folder, "index.json")))
    assert (index["depth"], index["frames"]) == (1, 25)
    assert decode(os.path.join(folder, "level_1", "segment_00000.mp4"))[0].shape == (32, 32, 3)
    again = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_chop.py"), minute_video, "--L", "25",
                            "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already exists" in again.stderr


# ---------------------------------------------------------------------------------------------------
# bad arguments and unreadable videos: a clear message each, never a traceback or an endless loop


@pytest.mark.parametrize("arguments, message", [
    (["--fps", "-1"], "--fps: give a frame rate"),
    (["--fps", "0"], "--fps: give a frame rate"),
    (["--fps", "1e-9"], "--fps: give a frame rate"),
    (["--fps", "nan"], "--fps: give a frame rate"),
    (["--fps", "inf"], "--fps: give a frame rate"),
    (["--size", "0x0"], "--size: write the size as WIDTHxHEIGHT"),
    (["--size=-5x10"], "--size: write the size as WIDTHxHEIGHT"),
    (["--L", "2"], "--L: give a whole number of frames from 3"),
])
def test_bad_arguments_are_refused_by_name(arguments, message, capsys):
    with pytest.raises(SystemExit) as raised:
        video_chop.main(["video.mp4", "--L", "8", *arguments])
    assert raised.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("fps, size, segment_frames, message", [
    (-1.0, None, 8, "--fps -1.0 is not a frame rate"), (0.0, None, 8, "--fps 0.0"), (float("nan"), None, 8, "--fps nan"),
    (1e-9, None, 8, "--fps 1e-09"), (None, (0, 0), 8, r"--size \(0, 0\) is not a frame size"), (None, None, 2, "--L must be"),
])
def test_chop_checks_its_arguments(fps, size, segment_frames, message, minute_video, tmp_path):
    with pytest.raises(video_chop.ChopError, match=message):
        video_chop.chop(minute_video, segment_frames, str(tmp_path / "out"), fps=fps, size=size)
    assert not (tmp_path / "out").exists()


def test_unreadable_videos_are_named(minute_video, tmp_path):
    data = open(minute_video, "rb").read()
    broken = {"empty.mp4": b"", "text.mp4": b"this is not a video\n" * 50, "header.mp4": data[:2000],
              "truncated.mp4": data[: len(data) // 3]}
    for name, content in broken.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(video_chop.ChopError, match=f"{path}: .*(cannot be read|no readable video|ended early|no frames)"):
            video_chop.chop(str(path), 8, str(tmp_path / "out"))
        result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_chop.py"), str(path), "--L", "8",
                                 "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300) \
            if name == "truncated.mp4" else None
        if result is not None:
            assert result.returncode == 1 and result.stderr.startswith(f"video_chop: {path}") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
