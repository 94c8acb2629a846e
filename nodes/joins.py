"""Where a long video's pieces meet, as the samplers tell it: facts kept in the LATENT they return.

A LATENT's pack facts (LATENT_INFO, a dict) get:

- "joins": latent frames t at which the step t - 1 -> t crosses from one separately made piece to another (a new
  continuation chunk, a frame beside a keyframe an infill or interpolation run was given, a co-denoise window edge,
  a clip boundary);
- "keyframes": latent frames the last pass was given rather than made (the parents of the last infill level, the
  frames an interpolation pass kept);
- "carried": for continuation, the frames each chunk carried over (one count per join);
- "latent_frames": how many latent frames these indices refer to, so a latent cut or stretched by another node is
  not read with stale joins.

They are merged into whatever facts the LATENT already holds (other features keep their own keys there), and travel
with .latent files (utils/video_io.py save_latent_file / load_latent_file). LongVideoReport and LongVideoColourMatch
read them, in pixel frames once decoded (`pixel_index`).
"""

from __future__ import annotations

from ..sampling.context_windows import window_starts
from .common import LATENT_INFO

JOIN_KEYS = ("joins", "keyframes", "carried", "latent_frames")


def with_joins(latent: dict, joins, keyframes=(), carried=None, start_latent=None) -> dict:
    """`latent` (a LATENT dict) with its joins, merged into its facts; the joins and keyframes of `start_latent` (a
    clip the sampler continued, its frames first) come first when they belong to it."""
    frames = int(latent["samples"].shape[2])
    joins, keyframes = sorted({int(j) for j in joins if 0 < j < frames}), sorted({int(k) for k in keyframes})
    start = latent_joins(start_latent) if start_latent is not None else None
    carried = None if carried is None else [int(k) for k in carried]
    if start is not None:
        joins = sorted(set(start["joins"]) | set(joins))
        keyframes = sorted(set(start["keyframes"]) | set(keyframes))
        if carried is not None and start["carried"] is not None:
            carried = start["carried"] + carried
        elif carried is not None:
            carried = None  # the start's joins have no counts: leave them all out rather than misalign them
    info = dict(latent.get(LATENT_INFO) or {})
    info.update({"joins": joins, "keyframes": keyframes, "latent_frames": frames})
    if carried is not None and len(carried) == len(joins):
        info["carried"] = carried
    else:
        info.pop("carried", None)
    latent[LATENT_INFO] = info
    return latent


def latent_joins(latent) -> dict | None:
    """{"joins", "keyframes", "carried" (or None), "latent_frames"} of a LATENT, or None when it has none or they were
    made for another number of frames."""
    if not isinstance(latent, dict):
        return None
    info = latent.get(LATENT_INFO)
    samples = latent.get("samples")
    if not isinstance(info, dict) or "joins" not in info or samples is None or samples.dim() != 5:
        return None
    if info.get("latent_frames") != samples.shape[2]:
        return None
    carried = info.get("carried")
    return {"joins": list(info["joins"]), "keyframes": list(info.get("keyframes", [])),
            "carried": list(carried) if carried is not None else None, "latent_frames": int(info["latent_frames"])}


def pixel_index(latent_index: int, temporal: int) -> int:
    """The first pixel frame of latent frame `latent_index` for a VAE that makes `temporal` pixel frames per latent
    frame after a first frame of its own (Wan, HunyuanVideo: 4; LTX-Video: 8; the pack's VAEs: 1)."""
    return 0 if latent_index <= 0 else temporal * (latent_index - 1) + 1


# ---------------------------------------------------------------------------------------------------
# each sampler's pieces


def continuation_joins(counts: list[int], frames_per_chunk: int, start_frames: int) -> tuple[list[int], list[int]]:
    """(joins, carried) of a continuation: chunk c (carrying counts[c] frames over; 0 for a first chunk from nothing)
    adds frames_per_chunk - counts[c] frames after the `start_frames` of its start clip."""
    joins, carried, made = [], [], start_frames
    for k in counts:
        if made:
            joins.append(made)
            carried.append(k)
        made += frames_per_chunk - k
    return joins, carried


def beside(known: list[int], frames: int) -> list[int]:
    """The joins around given frames: the steps into and out of each one."""
    known = set(known)
    return [t for t in range(1, frames) if t in known or t - 1 in known]


def window_joins(frames: int, frames_per_window: int, overlap: int) -> list[int]:
    """The joins of overlapping windows (sampling/context_windows.py window_starts): where each window after the first
    begins and each one before the last ends."""
    starts = window_starts(frames, frames_per_window, overlap)
    edges = set(starts[1:]) | {s + frames_per_window for s in starts[:-1]}
    return sorted(e for e in edges if 0 < e < frames)


def every(step: int, frames: int) -> list[int]:
    """Frames 0, step, 2 step, ... below `frames`."""
    return list(range(0, frames, step))
