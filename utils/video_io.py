"""Streaming video output: write long frame sequences batch by batch without holding the whole video in memory."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import unicodedata
import uuid
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

VIDEO_FORMATS = ("mp4", "webm", "gif")

# GIF stores frame delays in hundredths of a second, so it cannot go faster than 100 fps.
MAX_FPS = {"mp4": 1000, "webm": 1000, "gif": 100}
# A metadata value larger than this (UTF-8 bytes) is left out of the file: a workflow is normally tens of KB, and
# an unbounded one would make every video as large as the prompt that made it.
MAX_METADATA_BYTES = 1 << 20
NAME_MAX_BYTES = 255  # one path component on ext4, btrfs, xfs, APFS, NTFS
_COUNTER_ROOM = len(".") + len("_") + 7 + len(".") + len(".partial")  # hidden partial name around a 7-digit counter
_CONTAINERS = {"mp4": "mp4", "webm": "webm", "gif": "gif"}
_CODECS = {"mp4": "libx264", "webm": "libvpx-vp9", "gif": "gif"}
_BT709 = 1  # AVCOL_PRI/TRC/SPC_BT709
_RANGE_MPEG = 1  # limited ("TV") range
_FILE_MODE = 0o666  # less the umask, as for any file a program creates (usually 0644)

log = logging.getLogger(__name__)


class VideoOutputError(ValueError):
    """Invalid video output settings or frames; the message names the offending input."""


class PartialSaveError(OSError):
    """Finished work could not be written to disk; the message names the file and says what was lost."""


def check_fps(fps, video_format: str = "mp4") -> Fraction:
    """The frame rate as a Fraction, after checking it is a finite number in (0, MAX_FPS[video_format]]."""
    if video_format not in VIDEO_FORMATS:
        raise VideoOutputError(f"video_format {video_format!r} is not supported; use one of {', '.join(VIDEO_FORMATS)}.")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps):
        raise VideoOutputError(f"fps {fps!r} is not a number; give frames per second, e.g. 8 or 23.976.")
    high = MAX_FPS[video_format]
    if not 0 < fps <= high:
        why = " (GIF frame delays are whole hundredths of a second)" if video_format == "gif" else ""
        raise VideoOutputError(f"fps {fps!r} is out of range for {video_format}; it must be greater than 0 and at most {high}{why}.")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise VideoOutputError(f"fps {fps!r} is too small; it must be at least 1/1001.")
    return rate


# Characters that reorder how text is shown (bidirectional embeddings, overrides, isolates and marks).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_output_prefix(output_dir: str, filename_prefix: str, extension: str) -> tuple[str, list[str], str]:
    """Check a file name prefix without creating anything; return (real output folder, subfolders, file name start).

    Refused, naming the prefix: empty prefixes, absolute paths (and drive letters on Windows), '..' components, a
    missing file name, parts too long for the file system, a path whose existing part (symlinks resolved) lies
    outside output_dir or is not a writable folder.
    """
    prefix = str(filename_prefix or "").strip()
    extension = str(extension).lstrip(".")
    if not prefix:
        raise VideoOutputError("filename_prefix is empty; give a name such as 'video' or 'videos/run1'.")
    if not re.fullmatch(r"[A-Za-z0-9]+", extension):
        raise VideoOutputError(f"extension {extension!r} is not valid; use one of {', '.join(VIDEO_FORMATS)}.")
    if "\0" in prefix:
        raise VideoOutputError(f"filename_prefix {prefix!r} contains a NUL character; remove it.")
    hidden = sorted({f"U+{ord(c):04X}" for c in prefix if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS})
    if hidden:
        raise VideoOutputError(f"filename_prefix {prefix!r} contains control or text-direction characters "
                               f"({', '.join(hidden)}), which break the list of written files and can disguise a "
                               "name; remove them.")
    if prefix.startswith(("/", "\\")) or os.path.isabs(prefix) or os.path.splitdrive(prefix)[0]:
        raise VideoOutputError(
            f"filename_prefix {prefix!r} is an absolute path; use a name relative to the output folder, e.g. 'videos/run1'."
        )
    parts = [p for p in re.split(r"[\\/]+", prefix) if p not in ("", ".")]
    if ".." in parts:
        raise VideoOutputError(f"filename_prefix {prefix!r} contains '..'; it must stay inside the output folder.")
    if not parts or prefix.endswith(("/", "\\")):
        raise VideoOutputError(f"filename_prefix {prefix!r} has no file name; end it with a name, e.g. 'videos/run1'.")
    *sub, name = parts
    for part, room in [(p, NAME_MAX_BYTES) for p in sub] + [(name, NAME_MAX_BYTES - _COUNTER_ROOM - len(extension))]:
        size = len(os.fsencode(part))
        if size > room:
            raise VideoOutputError(
                f"filename_prefix {prefix[:40]!r}...: the part {part[:20]!r}... is {size} bytes long but file systems allow "
                f"{room} there; shorten it."
            )
    root = os.path.realpath(output_dir)
    folder = os.path.join(root, *sub)
    _check_inside(root, folder, prefix)
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise VideoOutputError(f"filename_prefix {prefix!r}: {existing!r} is a file, not a folder; choose another prefix.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VideoOutputError(f"filename_prefix {prefix!r}: the folder {existing!r} is not writable; choose another output folder.")
    return root, sub, name


def resolve_output_path(output_dir: str, filename_prefix: str, extension: str) -> tuple[str, str, str]:
    """Return ``(full_path, subfolder, filename)`` for the next free ``<prefix>_<counter:05d>.<ext>`` in output_dir.

    ``filename_prefix`` may contain subfolders separated by '/' (e.g. ``"videos/run1"``); they are created. The prefix
    is checked by check_output_prefix. The counter is one more than the largest counter for that prefix and extension
    among the finished files and the hidden ``.partial`` files of writers still running, starting at 1; a ``.partial``
    file that no running writer holds (left by a killed process) is deleted and does not count. ``subfolder`` is
    relative to output_dir and uses '/' separators ("" for none). The name is not held: two processes can get the
    same one. Writers use reserve_output_path, which holds it.
    """
    root, sub, name = check_output_prefix(output_dir, filename_prefix, extension)
    extension = str(extension).lstrip(".")
    folder = os.path.join(root, *sub)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise VideoOutputError(f"filename_prefix {filename_prefix!r}: cannot create the folder {folder!r} "
                               f"({error.strerror or error}); choose another prefix.") from None
    _check_inside(root, folder, filename_prefix)  # again: a symlink may have appeared meanwhile
    filename = f"{name}_{_next_counter(folder, name, extension):05d}.{extension}"
    full_path = os.path.join(folder, filename)
    _check_inside(root, full_path, filename_prefix)
    return full_path, "/".join(sub), filename


def _next_counter(folder: str, name: str, extension: str) -> int:
    pattern = re.compile(rf"(\.?){re.escape(name)}_(\d+)\.{re.escape(extension)}(\.partial)?")
    counters = []
    for entry in os.listdir(folder):
        match = pattern.fullmatch(entry)
        if match is None:
            continue
        if match.group(3) and _remove_if_stale(os.path.join(folder, entry)):
            continue
        counters.append(int(match.group(2)))
    return max(counters, default=0) + 1


def _partial_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.partial")


class OutputReservation:
    """A numbered output file name held by this process until commit() or discard().

    The name is held by its hidden ``.<filename>.partial`` file, created exclusively (no other writer can create it
    too) and, where the system has flock, locked for as long as this object lives: the lock ends with the process,
    so a partial file nobody holds is known to be a leftover of a killed writer. Write into ``partial_path``;
    commit() flushes it to disk and renames it to ``path``; discard() deletes it.
    """

    def __init__(self, path: str, subfolder: str, filename: str, handle: int):
        self.path, self.subfolder, self.filename = path, subfolder, filename
        self.partial_path = _partial_path(path)
        self._handle = handle

    @property
    def held(self) -> bool:
        return self._handle is not None

    def write_bytes(self, data: bytes) -> None:
        """Write `data` into the partial file (it must still be empty)."""
        view = memoryview(data)
        while view:
            written = os.write(self._handle, view)
            view = view[written:]

    def commit(self) -> str:
        """Flush the partial file to disk and give it its final name; returns the path."""
        if self._handle is None:
            raise RuntimeError(f"the reservation of {self.path} was already committed or discarded")
        try:
            os.fsync(self._handle)
            if os.name == "nt":  # Windows cannot rename a file that is open
                os.close(self._handle)
                self._handle = None
            os.replace(self.partial_path, self.path)
            _sync_folder(os.path.dirname(self.path))
        finally:
            self._release()
        return self.path

    def discard(self) -> None:
        """Delete the partial file and give the name back (nothing happens after commit)."""
        if self._handle is None:
            return
        try:
            if os.name == "nt":
                self._release()
            os.remove(self.partial_path)
        except FileNotFoundError:
            pass
        finally:
            self._release()

    def _release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # also ends the lock
            self._handle = None

    def __enter__(self) -> "OutputReservation":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.discard()
        return False

    def __del__(self):
        self._release()


def reserve_output_path(output_dir: str, filename_prefix: str, extension: str) -> OutputReservation:
    """Hold the next free ``<prefix>_<counter:05d>.<ext>`` of output_dir (see resolve_output_path): two processes
    asking at the same time get different numbers. Use it as a context manager (discarded on leaving unless
    committed), or pass it to VideoWriter / write_video / save_latent_file."""
    for _ in range(1000):
        path, subfolder, filename = resolve_output_path(output_dir, filename_prefix, extension)
        handle = _claim(_partial_path(path))
        if handle is None:
            continue  # another writer took this number between the listing and the claim
        if os.path.lexists(path):  # finished by another writer while we listed: take the next number
            _close_and_remove(handle, _partial_path(path))
            continue
        return OutputReservation(path, subfolder, filename, handle)
    raise VideoOutputError(f"filename_prefix {filename_prefix!r}: could not reserve a free file name in {output_dir!r}.")


def _claim(partial: str) -> int | None:
    """Create `partial` exclusively and lock it; the open handle, or None when it exists and a live writer holds it.
    A leftover nobody holds is deleted and claimed."""
    for _ in range(2):
        handle = _create_locked(partial)
        if handle is not None:
            return handle
        if not _remove_if_stale(partial):
            return None
    return None


def _create_locked(partial: str) -> int | None:
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    if fcntl is not None:
        # Made and locked under a unique name first, then linked into place, so the partial name never exists unlocked.
        folder = os.path.dirname(partial)
        scratch = os.path.join(folder, f".{uuid.uuid4().hex}.claim")
        handle = os.open(scratch, flags, _FILE_MODE)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                os.link(scratch, partial)
                return handle
            except FileExistsError:
                os.close(handle)
                return None
            except OSError:
                pass  # no hard links on this file system: create it directly (below)
        except BaseException:
            os.close(handle)
            raise
        finally:
            os.remove(scratch)
        os.close(handle)
    try:
        handle = os.open(partial, flags, _FILE_MODE)
    except FileExistsError:
        return None
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _remove_if_stale(partial: str) -> bool:
    """Delete `partial` if no running writer holds it (a killed writer's leftover); True when it is gone."""
    if fcntl is None:
        try:
            os.remove(partial)  # Windows refuses while the writer has it open
        except FileNotFoundError:
            return True
        except PermissionError:
            return False
        return True
    try:
        handle = os.open(partial, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        mine = os.fstat(handle)
        try:
            now = os.stat(partial)
            if (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):  # still the file we locked
                os.remove(partial)
        except FileNotFoundError:
            pass
        log.info("removed %s, left by a writer that was killed", partial)
        return True
    finally:
        os.close(handle)


def _close_and_remove(handle: int, partial: str) -> None:
    try:
        os.remove(partial)
    finally:
        os.close(handle)


def _sync_folder(folder: str) -> None:
    """Make a rename in `folder` survive a power cut (POSIX; Windows has no folder handles to flush)."""
    if os.name == "nt":
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync folders; the rename itself has happened
    finally:
        os.close(handle)


# The safetensors metadata key of the pack's own facts about a saved latent (LATENT_INFO in a LATENT: where its joins
# are, how to resume it), stored as JSON; ComfyUI's LoadLatent ignores it.
LATENT_INFO_KEY = "longvideo"


def save_latent_file(latents, reservation: OutputReservation, info: dict | None = None) -> str:
    """Write a LATENT's samples in ComfyUI's .latent format (safetensors: latent_tensor plus the format marker) into a
    reservation and commit it; returns the path. `info` (JSON-serialisable) is kept in the file's metadata and comes
    back from load_latent_file. A failure discards the reservation and raises PartialSaveError naming the file."""
    from safetensors.torch import save

    try:
        metadata = None if info is None else {LATENT_INFO_KEY: json.dumps(info)}
        tensors = {"latent_tensor": latents.detach().cpu().contiguous(), "latent_format_version_0": torch.tensor([])}
        data = save(tensors, metadata=metadata)
        reservation.write_bytes(data)
        del data
        return reservation.commit()
    except OSError as error:
        raise PartialSaveError(f"could not write {reservation.path} ({error.strerror or error})") from error
    finally:
        reservation.discard()  # nothing left behind on failure; no effect after commit


def load_latent_file(path: str) -> tuple[torch.Tensor, dict]:
    """The samples of a .latent file (ComfyUI's format, or an older one with latent_tensor only) and the pack's info
    saved with it ({} when it has none). Scaling as ComfyUI's LoadLatent: files without the format marker hold
    latents scaled by 1 / 0.18215."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        info = json.loads((handle.metadata() or {}).get(LATENT_INFO_KEY, "{}"))
        samples = handle.get_tensor("latent_tensor").float()
        if "latent_format_version_0" not in handle.keys():
            samples = samples * (1.0 / 0.18215)
    return samples, info


def _check_inside(root: str, path: str, prefix: str) -> None:
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise VideoOutputError(
            f"filename_prefix {prefix!r} resolves to {real!r}, outside the output folder {root!r} "
            "(check for symlinks); choose a path inside the output folder."
        )


def _validate_settings(path, fps, video_format, crf, metadata) -> tuple[Fraction, dict[str, str]]:
    if isinstance(path, OutputReservation):
        path = path.path
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise VideoOutputError(f"path {path!r} is not a file path; give the output video file path.")
    rate = check_fps(fps, video_format)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise VideoOutputError(f"crf {crf!r} is invalid; use a whole number from 0 (best) to 63 (smallest).")
    meta = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise VideoOutputError(f"metadata key {key!r} is invalid; keys must be non-empty strings.")
        value = value if isinstance(value, str) else json.dumps(value)
        if len(value) > MAX_METADATA_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
            log.warning("metadata %r (%d characters) is larger than %d bytes; the video is written without it",
                        key, len(value), MAX_METADATA_BYTES)
            continue
        meta[key] = value
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

    ``path`` is a file path or an OutputReservation (reserve_output_path). Frames are encoded into the hidden
    temporary file ``.<filename>.partial`` in the target folder, held by this writer (a second writer of the same
    path is refused while this one runs), flushed to disk and renamed to ``path`` (os.replace) only when the
    ``with`` block exits normally. On any exception, including KeyboardInterrupt, the container is closed, the
    temporary file deleted and the exception re-raised, so nothing is left behind. Leaving the block without
    writing a frame raises VideoOutputError (no file). Metadata values over MAX_METADATA_BYTES are left out.

    mp4 is H.264 (libx264, yuv420p), webm is VP9 (libvpx-vp9, yuv420p); both are tagged BT.709 limited
    range. ``crf`` sets quality (lower is better; H.264 caps it at 51). gif uses an adaptive 256-colour
    palette per frame and ignores crf and metadata. ``width``/``height`` are the input frame size; for
    mp4/webm an odd size is padded to even in the file by repeating the last row/column.
    """

    def __init__(self, path: str, fps: float, video_format: str = "mp4", crf: int = 19,
                 metadata: dict[str, str] | None = None):
        self._rate, self._metadata = _validate_settings(path, fps, video_format, crf, metadata)
        self._reservation = path if isinstance(path, OutputReservation) else None
        self.path = path.path if self._reservation else os.fspath(path)
        self.fps = fps
        self.video_format = video_format
        self.crf = crf
        self.frames_written = 0
        self.width = 0
        self.height = 0
        self._tmp_path = _partial_path(self.path)
        self._container = None
        self._stream = None
        self._active = False

    def __enter__(self) -> "VideoWriter":
        folder = os.path.dirname(self._tmp_path)
        if not os.path.isdir(folder):
            raise VideoOutputError(f"path {self.path!r}: folder {folder!r} does not exist; create it first.")
        if self._active or self.frames_written:
            raise RuntimeError("a VideoWriter can only be used for one with-block")
        if self._reservation is None:
            handle = _claim(self._tmp_path)
            if handle is None:
                raise VideoOutputError(f"path {self.path!r} is being written by another writer right now; choose another path.")
            self._reservation = OutputReservation(self.path, "", os.path.basename(self.path), handle)
        elif not self._reservation.held:
            raise VideoOutputError(f"the reservation of {self.path!r} was already used; reserve a new name.")
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
            self._reservation.commit()
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
        if self._reservation is not None:
            self._reservation.discard()


def write_video(batches, path, fps, video_format="mp4", crf=19, metadata=None) -> dict:
    """Stream an iterable of frame batches ([N, H, W, 3] each) into one video file.

    ``path`` is a file path or an OutputReservation. Returns ``{"frames": n, "width": w, "height": h, "fps": fps,
    "path": path}`` (input frame size, the final path).
    An empty iterable raises VideoOutputError and leaves no file. See VideoWriter for the options.
    """
    with VideoWriter(path, fps, video_format, crf, metadata) as writer:
        for batch in batches:
            writer.write(batch)
            del batch  # released before the next batch is made, so only one batch exists at a time
    return {"frames": writer.frames_written, "width": writer.width, "height": writer.height, "fps": fps, "path": writer.path}
