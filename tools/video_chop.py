"""Chop a long video into the diffusion-over-diffusion hierarchy that NUWA-XL trains on (and InfiNet learns from).

    python tools/video_chop.py VIDEO --L 16 [--fps 8] [--size 256x256] [--out DIR] [--caption TEXT]

With segments of L frames, depth m keeps the first N(m) = (L-1)^m + 1 frames (m as large as the video allows).
Level k (1..m) samples them at stride (L-1)^(m-k): its (L-1)^(k-1) segments hold L frames each, and the first
and last frame of every segment are frames of the level above (its parents); level 1 holds the L keyframes,
level m consecutive frames. This is the layout the hierarchical sampler generates and `train_infinet.py`
conditions on (parents at positions 0 and L-1).

Writes, inside DIR/<video name>/:
    level_<k>/segment_<j>.mp4   the L frames of segment j of level k
    level_<k>/segment_<j>.txt   its caption (the --caption text; edit them by hand or with a captioner)
    index.json                  L, depth, fps, size and, per segment, the source frame numbers it holds

The video is streamed: frames are decoded one at a time and go straight into the (at most two per level) open
segment files, so memory does not depend on the video's length. Everything is written into a hidden folder that
is renamed into place at the end, so an interrupted run leaves no half-finished dataset.
"""

import argparse
import json
import os
import shutil
import sys
from fractions import Fraction

import av
import cv2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pack_import import import_pack  # noqa: E402

import_pack()
from longvideo.utils.video_io import VideoWriter  # noqa: E402


class ChopError(ValueError):
    pass


def hierarchy_depth(frames: int, segment_frames: int) -> int:
    """The largest m with (L-1)^m + 1 <= frames (0 when not even one level fits)."""
    if segment_frames < 3:
        raise ChopError(f"--L must be at least 3 (two parents and a frame between them), got {segment_frames}")
    depth = 0
    while (segment_frames - 1) ** (depth + 1) + 1 <= frames:
        depth += 1
    return depth


def segment_frames(level: int, depth: int, segment_frames_count: int, segment: int) -> list[int]:
    """Frame numbers (in the resampled video) of one segment of `level` (1..depth)."""
    step = segment_frames_count - 1
    stride = step ** (depth - level)
    return [(segment * step + position) * stride for position in range(segment_frames_count)]


def segments_holding(frame: int, depth: int, segment_frames_count: int):
    """(level, segment, position) of every segment that holds `frame` (a frame is the last of one segment and the
    first of the next at every level whose stride divides it)."""
    step = segment_frames_count - 1
    for level in range(1, depth + 1):
        stride = step ** (depth - level)
        if frame % stride:
            continue
        q = frame // stride
        if q % step == 0 and q > 0:
            yield level, q // step - 1, step
        if q // step < step ** (level - 1):
            yield level, q // step, q % step


def resampled_frames(path: str, fps: float | None):
    """(frame number, RGB frame) of the video at `fps` (nearest source frame; None keeps the source rate), streamed."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        source_rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        ratio = Fraction(1) if fps is None else Fraction(source_rate) / Fraction(fps).limit_denominator(1000)
        wanted = 0
        for source_index, frame in enumerate(container.decode(stream)):
            image = None
            while round(wanted * ratio) == source_index:
                image = image if image is not None else frame.to_ndarray(format="rgb24")
                yield wanted, image
                wanted += 1


def count_frames(path: str, fps: float | None) -> tuple[int, float]:
    """Frames the resampled video has, and its rate; counts packets (no decoding) when the header does not say."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        source_rate = Fraction(stream.average_rate or stream.guessed_rate or 24)
        source_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if source_frames == 0:
        raise ChopError(f"{path}: the video has no frames")
    if fps is None:
        return source_frames, float(source_rate)
    ratio = source_rate / Fraction(fps).limit_denominator(1000)
    frames = 0
    while round(frames * ratio) <= source_frames - 1:
        frames += 1
    return frames, float(fps)


def chop(path: str, segment_frames_count: int, out_dir: str, fps: float | None = None,
         size: tuple[int, int] | None = None, caption: str = "", crf: int = 18) -> str:
    """Write the hierarchy of `path` into out_dir/<video name>/ and return that folder."""
    if not os.path.isfile(path):
        raise ChopError(f"video {path!r} does not exist")
    total, rate = count_frames(path, fps)
    depth = hierarchy_depth(total, segment_frames_count)
    if depth == 0:
        raise ChopError(f"{path}: {total} frames at {rate:g} fps are too few for one level of {segment_frames_count}-frame "
                        f"segments (needs {segment_frames_count}); lower --L or raise --fps")
    kept = (segment_frames_count - 1) ** depth + 1
    name = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(out_dir, name)
    if os.path.exists(target):
        raise ChopError(f"{target} already exists: remove it or choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    partial = os.path.join(out_dir, f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for level in range(1, depth + 1):
        os.makedirs(os.path.join(partial, f"level_{level}"))

    levels = [{"level": level, "stride": (segment_frames_count - 1) ** (depth - level), "segments": []}
              for level in range(1, depth + 1)]
    writers = {}
    try:
        for frame_number, image in resampled_frames(path, fps):
            if frame_number >= kept:
                break
            if size is not None:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            for level, segment, position in segments_holding(frame_number, depth, segment_frames_count):
                key = (level, segment)
                if position == 0:
                    clip = f"level_{level}/segment_{segment:05d}"
                    writers[key] = VideoWriter(os.path.join(partial, clip + ".mp4"), rate, "mp4", crf).__enter__()
                    with open(os.path.join(partial, clip + ".txt"), "w") as text:
                        text.write(caption)
                    levels[level - 1]["segments"].append({
                        "clip": clip + ".mp4", "caption": clip + ".txt",
                        "frames": segment_frames(level, depth, segment_frames_count, segment),
                    })
                writers[key].write(image[None])
                if position == segment_frames_count - 1:
                    writers.pop(key).__exit__(None, None, None)
        if writers:
            raise ChopError(f"{path}: the video ended early ({len(writers)} segment(s) unfinished)")
        index = {"source": os.path.abspath(path), "L": segment_frames_count, "depth": depth, "fps": rate,
                 "frames": kept, "levels": levels}
        with open(os.path.join(partial, "index.json"), "w") as file:
            json.dump(index, file, indent=1)
    except BaseException as error:
        for writer in writers.values():
            writer.__exit__(type(error), error, None)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, target)
    return target


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"write the size as WIDTHxHEIGHT, e.g. 256x256, not {text!r}") from None
    return width, height


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("--L", type=int, required=True, dest="segment_frames", help="frames per segment (NUWA-XL's L)")
    parser.add_argument("--fps", type=float, default=None, help="resample to this frame rate first (default: the video's)")
    parser.add_argument("--size", type=_size, default=None, help="resize frames to WIDTHxHEIGHT")
    parser.add_argument("--out", default="chopped", help="folder to write into (default ./chopped)")
    parser.add_argument("--caption", default="", help="text written into every caption file")
    args = parser.parse_args(argv)
    try:
        folder = chop(args.video, args.segment_frames, args.out, args.fps, args.size, args.caption)
    except ChopError as error:
        raise SystemExit(f"video_chop: {error}") from None
    print(folder)


if __name__ == "__main__":
    main()
