"""Streaming video output: write long frame sequences batch by batch without holding the whole video in memory."""

from __future__ import annotations

import json
import math
import os
import re
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image

VIDEO_FORMATS = ("mp4", "webm", "gif")

_MAX_FPS = 1000
_CONTAINERS = {"mp4": "mp4", "webm": "webm", "gif": "gif"}
_CODECS = {"mp4": "libx264", "webm": "libvpx-vp9", "gif": "gif"}
_BT709 = 1  # AVCOL_PRI/TRC/SPC_BT709
_RANGE_MPEG = 1  # limited ("TV") range


class VideoOutputError(ValueError):
    """Invalid video output settings or frames; the message names the offending input."""


def resolve_output_path(output_dir: str, filename_prefix: str, extension: str) -> tuple[str, str, str]:
    """Return ``(full_path, subfolder, filename)`` for the next free ``<prefix>_<counter:05d>.<ext>`` in output_dir.

    ``filename_prefix`` may contain subfolders separated by '/' (e.g. ``"videos/run1"``); they are created.
    Empty prefixes, absolute paths, drive letters, '..' components and anything whose real path (symlinks
    resolved) lies outside output_dir raise VideoOutputError. The counter is one more than the largest
    existing counter for that prefix and extension in the folder, starting at 1. ``subfolder`` is relative
    to output_dir and uses '/' separators ("" for none).
    """
    prefix = str(filename_prefix or "").strip()
    extension = str(extension).lstrip(".")
    if not prefix:
        raise VideoOutputError("filename_prefix is empty; give a name such as 'video' or 'videos/run1'.")
    if not re.fullmatch(r"[A-Za-z0-9]+", extension):
        raise VideoOutputError(f"extension {extension!r} is not valid; use one of {', '.join(VIDEO_FORMATS)}.")
    if "\0" in prefix:
        raise VideoOutputError(f"filename_prefix {prefix!r} contains a NUL character; remove it.")
    if prefix.startswith(("/", "\\")) or os.path.isabs(prefix) or re.match(r"[A-Za-z]:", prefix):
        raise VideoOutputError(
            f"filename_prefix {prefix!r} is an absolute path; use a name relative to the output folder, e.g. 'videos/run1'."
        )
    parts = [p for p in re.split(r"[\\/]+", prefix) if p not in ("", ".")]
    if ".." in parts:
        raise VideoOutputError(f"filename_prefix {prefix!r} contains '..'; it must stay inside the output folder.")
    if not parts or prefix.endswith(("/", "\\")):
        raise VideoOutputError(f"filename_prefix {prefix!r} has no file name; end it with a name, e.g. 'videos/run1'.")

    root = os.path.realpath(output_dir)
    *sub, name = parts
    folder = os.path.join(root, *sub)
    _check_inside(root, folder, prefix)  # before makedirs, so nothing is created through an escaping symlink
    os.makedirs(folder, exist_ok=True)
    _check_inside(root, folder, prefix)

    # Also count hidden '.partial' files, so a video still being written keeps its number.
    pattern = re.compile(rf"\.?{re.escape(name)}_(\d+)\.{re.escape(extension)}(?:\.partial)?")
    counters = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.fullmatch(f))]
    filename = f"{name}_{max(counters, default=0) + 1:05d}.{extension}"
    full_path = os.path.join(folder, filename)
    _check_inside(root, full_path, prefix)
    return full_path, "/".join(sub), filename


def _check_inside(root: str, path: str, prefix: str) -> None:
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise VideoOutputError(
            f"filename_prefix {prefix!r} resolves to {real!r}, outside the output folder {root!r} "
            "(check for symlinks); choose a path inside the output folder."
        )


def _validate_settings(path, fps, video_format, crf, metadata) -> tuple[Fraction, dict[str, str]]:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise VideoOutputError(f"path {path!r} is not a file path; give the output video file path.")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps):
        raise VideoOutputError(f"fps {fps!r} is not a number; give frames per second, e.g. 8 or 23.976.")
    if not 0 < fps <= _MAX_FPS:
        raise VideoOutputError(f"fps {fps!r} is out of range; it must be greater than 0 and at most {_MAX_FPS}.")
    if video_format not in VIDEO_FORMATS:
        raise VideoOutputError(f"video_format {video_format!r} is not supported; use one of {', '.join(VIDEO_FORMATS)}.")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise VideoOutputError(f"crf {crf!r} is invalid; use a whole number from 0 (best) to 63 (smallest).")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise VideoOutputError(f"fps {fps!r} is too small; it must be at least 1/1001.")
    meta = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise VideoOutputError(f"metadata key {key!r} is invalid; keys must be non-empty strings.")
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return rate, meta


def _check_batch(frames) -> None:
    if not isinstance(frames, (torch.Tensor, np.ndarray)):
        raise VideoOutputError(
            f"frames of type {type(frames).__name__} are not supported; give a torch.Tensor or numpy array "
            "of shape [frames, height, width, 3]."
        )
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] == 0 or shape[2] == 0:
        raise VideoOutputError(
            f"frames have shape {list(shape)}; expected [frames, height, width, 3] (RGB images, channels last)."
        )
    dtype = frames.dtype
    is_float = dtype.is_floating_point if isinstance(frames, torch.Tensor) else np.issubdtype(dtype, np.floating)
    if not is_float and dtype not in (torch.uint8, np.uint8):
        raise VideoOutputError(f"frames have dtype {dtype}; use float values in 0..1 or uint8 values in 0..255.")


def _to_uint8(frame) -> np.ndarray:
    """One [H, W, 3] frame -> contiguous uint8 numpy array (floats are clamped to 0..1)."""
    if isinstance(frame, torch.Tensor):
        if frame.dtype != torch.uint8:
            frame = frame.detach().float().nan_to_num(0.0).clamp(0, 1).mul(255).round().to(torch.uint8)
        return np.ascontiguousarray(frame.cpu().numpy())
    if frame.dtype != np.uint8:
        frame = np.rint(np.clip(np.nan_to_num(frame.astype(np.float32)), 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(frame)


class VideoWriter:
    """Context manager that streams frame batches into one video file.

    Frames are encoded into a hidden temporary file ``.<filename>.partial`` in the target folder, which is
    renamed to ``path`` (os.replace) only when the ``with`` block exits normally. On any exception, including
    KeyboardInterrupt, the container is closed, the temporary file deleted and the exception re-raised, so
    nothing is left behind. Leaving the block without writing a frame raises VideoOutputError (no file).

    mp4 is H.264 (libx264, yuv420p), webm is VP9 (libvpx-vp9, yuv420p); both are tagged BT.709 limited
    range. ``crf`` sets quality (lower is better; H.264 caps it at 51). gif uses an adaptive 256-colour
    palette per frame and ignores crf and metadata. ``width``/``height`` are the input frame size; for
    mp4/webm an odd size is padded to even in the file by repeating the last row/column.
    """

    def __init__(self, path: str, fps: float, video_format: str = "mp4", crf: int = 19,
                 metadata: dict[str, str] | None = None):
        self._rate, self._metadata = _validate_settings(path, fps, video_format, crf, metadata)
        self.path = os.fspath(path)
        self.fps = fps
        self.video_format = video_format
        self.crf = crf
        self.frames_written = 0
        self.width = 0
        self.height = 0
        folder, name = os.path.split(os.path.abspath(self.path))
        self._tmp_path = os.path.join(folder, f".{name}.partial")
        self._container = None
        self._stream = None
        self._active = False

    def __enter__(self) -> "VideoWriter":
        folder = os.path.dirname(self._tmp_path)
        if not os.path.isdir(folder):
            raise VideoOutputError(f"path {self.path!r}: folder {folder!r} does not exist; create it first.")
        if self._active or self.frames_written:
            raise RuntimeError("a VideoWriter can only be used for one with-block")
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._active = False
        if exc_type is not None:
            self._abort()
            return False
        try:
            if self.frames_written == 0:
                raise VideoOutputError(f"no frames were given for {self.path!r}; the video would be empty.")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp_path, self.path)
        except BaseException:
            self._abort()
            raise
        return False

    def write(self, frames) -> None:
        """Encode one batch of frames, a torch.Tensor or numpy array [N, H, W, 3].

        Float values are taken as 0..1 (clamped), uint8 as 0..255. The first batch fixes width and height;
        a later batch of another size raises VideoOutputError. For mp4/webm (yuv420p needs even sizes) an
        odd width/height is padded by replicating the last column/row. Frames are converted one at a time.
        """
        if not self._active:
            raise RuntimeError("VideoWriter.write() must be called inside its with-block")
        _check_batch(frames)
        n, height, width = frames.shape[:3]
        if n == 0:
            return
        if self._container is None:
            self.width, self.height = width, height
            self._open()
        elif (width, height) != (self.width, self.height):
            raise VideoOutputError(
                f"frames are {width}x{height} but this video is {self.width}x{self.height}; "
                "all batches must have the same width and height (resize them first)."
            )
        pad = (height % 2 or width % 2) and self.video_format != "gif"
        for i in range(n):
            image = _to_uint8(frames[i])
            if pad:
                image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            frame = self._make_frame(image)
            frame.pts = self.frames_written
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def _open(self) -> None:
        fmt = self.video_format
        options = {"movflags": "use_metadata_tags+faststart"} if fmt == "mp4" else {}
        self._container = av.open(self._tmp_path, mode="w", format=_CONTAINERS[fmt], options=options)
        stream = self._container.add_stream(_CODECS[fmt], rate=self._rate)
        even = fmt != "gif"
        stream.width, stream.height = self.width + even * (self.width % 2), self.height + even * (self.height % 2)
        stream.codec_context.time_base = 1 / self._rate
        if fmt == "gif":
            stream.pix_fmt = "pal8"
            # The default offsetting/transdiff flags diff palette indices against the previous frame, which
            # drops changes when per-frame palettes differ; write every frame whole instead.
            stream.options = {"gifflags": "0"}
        else:
            stream.pix_fmt = "yuv420p"
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = _BT709
            cc.color_range = _RANGE_MPEG
            if fmt == "mp4":
                stream.options = {"crf": str(min(self.crf, 51))}
            else:
                # bit_rate 0 selects VP9 constant-quality mode; cpu-used 4 + row-mt keep long videos practical.
                cc.bit_rate = 0
                stream.options = {"crf": str(self.crf), "deadline": "good", "cpu-used": "4", "row-mt": "1"}
            for key, value in self._metadata.items():
                self._container.metadata[key] = value
        self._stream = stream

    def _make_frame(self, image: np.ndarray) -> av.VideoFrame:
        if self.video_format == "gif":
            # Per-frame adaptive palette; FASTOCTREE is ~50x faster than median cut at similar quality.
            indexed = Image.fromarray(image).quantize(256, method=Image.Quantize.FASTOCTREE)
            rgb = np.asarray(indexed.getpalette(), dtype=np.uint8).reshape(-1, 3)[:256]
            palette = np.zeros((256, 4), dtype=np.uint8)
            palette[:, 0] = 255  # ARGB, opaque
            palette[: len(rgb), 1:] = rgb
            return av.VideoFrame.from_ndarray((np.asarray(indexed), palette), format="pal8")
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        return frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")

    def _abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass  # the file is deleted anyway; keep the original exception
            self._container = None
        try:
            os.remove(self._tmp_path)
        except FileNotFoundError:
            pass


def write_video(batches, path, fps, video_format="mp4", crf=19, metadata=None) -> dict:
    """Stream an iterable of frame batches ([N, H, W, 3] each) into one video file.

    Returns ``{"frames": n, "width": w, "height": h, "fps": fps, "path": path}`` (input frame size).
    An empty iterable raises VideoOutputError and leaves no file. See VideoWriter for the options.
    """
    with VideoWriter(path, fps, video_format, crf, metadata) as writer:
        for batch in batches:
            writer.write(batch)
            del batch  # released before the next batch is made, so only one batch exists at a time
    return {"frames": writer.frames_written, "width": writer.width, "height": writer.height, "fps": fps, "path": path}
