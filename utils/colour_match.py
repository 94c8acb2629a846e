"""Colour science for long videos: CIELAB, the CIEDE2000 colour difference, and colour transfer between chunks.

Frames are float32 RGB in 0..1 (ComfyUI's IMAGE), read as sRGB. CIELAB is OpenCV's (D65 white, L* 0..100).
`match_colours` corrects each chunk of a video towards a reference, in two streaming passes over frame batches: the
first gathers each chunk's colour statistics (a few numbers per chunk, whatever its length), the second corrects the
frames in place. Three transfers, as colour-match users know them:

- "lab": each CIELAB channel gets the reference's mean and spread (Reinhard et al. 2001);
- "histogram": each CIELAB channel gets the reference's histogram (the cumulative distribution matched);
- "mkl": the linear Monge-Kantorovich map in RGB (Pitie and Kokaram 2007): mean and 3x3 covariance matched with
  the least change of colours.

The reference of a chunk is the first chunk (drift over the whole video goes) or the frames carried over into it
(the frames just before its join, as corrected: the step at each join goes). Where a correction itself would make a
step at a join (the chunk before was corrected differently and the video had no step there), that step is eased
in over `ease_frames` frames instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

METHODS = ("mkl", "lab", "histogram")
REFERENCES = ("first_chunk", "carried_frames")
# CIELAB histograms: L* 0..100 in bins of 0.1, a* and b* -128..128 in bins of 0.25; histogram matching evaluates its
# map at GRID_STEPS points per bin.
HIST_BINS = 1024
GRID_STEPS = 4
HIST_RANGES = ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))
# A chunk whose channel spread is below this (in L*a*b* units) is flat in it: its spread is not scaled up.
MIN_SPREAD = 0.5
# The mean-and-spread transfer never scales a channel by more than this (or less than its inverse).
MAX_SCALE = 4.0
# Regularisation of the RGB covariances of the MKL transfer (a variance, RGB in 0..1: a spread of 0.5 / 255).
COVARIANCE_FLOOR = (0.5 / 255) ** 2
CARRIED_FRAMES = 4  # frames each side of a join compared in "carried_frames" mode when the sampler did not say


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100) of float RGB frames [..., 3] in 0..1 (sRGB)."""
    import cv2

    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    flat = rgb.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Float RGB in 0..1 (clipped) of CIELAB values [..., 3]."""
    import cv2

    lab = np.ascontiguousarray(lab, dtype=np.float32)
    rgb = cv2.cvtColor(lab.reshape(-1, 1, 3), cv2.COLOR_Lab2RGB).reshape(lab.shape)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def delta_e_2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu and Dalal 2005) between CIELAB colours [..., 3]; 1 is about the
    smallest difference an observer sees side by side."""
    lab1, lab2 = np.asarray(lab1, np.float64), np.asarray(lab2, np.float64)
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    chroma = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(chroma**7 / (chroma**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    achromatic = c1p * c2p == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(achromatic, 0.0, dh)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(achromatic, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    rotation = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    r_t = -np.sin(np.radians(2 * rotation)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


# ---------------------------------------------------------------------------------------------------
# statistics


@dataclass
class ColourStats:
    """What a transfer needs to know of a set of frames, summed as frames come: CIELAB sums and histograms, RGB
    first and second moments. Its size does not depend on how many frames went in."""

    pixels: int = 0
    lab_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    lab_squares: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rgb_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rgb_products: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    histograms: np.ndarray = field(default_factory=lambda: np.zeros((3, HIST_BINS)))

    @classmethod
    def of(cls, rgb: np.ndarray, lab: np.ndarray | None = None) -> ColourStats:
        stats = cls()
        stats.add(rgb, lab)
        return stats

    def add(self, rgb: np.ndarray, lab: np.ndarray | None = None) -> None:
        """Add frames [..., 3] (RGB 0..1; their CIELAB when already computed)."""
        lab = rgb_to_lab(rgb) if lab is None else lab
        flat_rgb = rgb.reshape(-1, 3).astype(np.float64)
        flat_lab = lab.reshape(-1, 3).astype(np.float64)
        self.pixels += len(flat_rgb)
        self.lab_sum += flat_lab.sum(0)
        self.lab_squares += (flat_lab * flat_lab).sum(0)
        self.rgb_sum += flat_rgb.sum(0)
        self.rgb_products += flat_rgb.T @ flat_rgb
        for channel, (low, high) in enumerate(HIST_RANGES):
            self.histograms[channel] += np.histogram(flat_lab[:, channel], HIST_BINS, (low, high))[0]

    def __add__(self, other: ColourStats) -> ColourStats:
        return ColourStats(self.pixels + other.pixels, self.lab_sum + other.lab_sum, self.lab_squares + other.lab_squares,
                           self.rgb_sum + other.rgb_sum, self.rgb_products + other.rgb_products,
                           self.histograms + other.histograms)

    @property
    def lab_mean(self) -> np.ndarray:
        return self.lab_sum / max(self.pixels, 1)

    @property
    def lab_spread(self) -> np.ndarray:
        mean = self.lab_mean
        return np.sqrt(np.maximum(self.lab_squares / max(self.pixels, 1) - mean * mean, 0.0))

    @property
    def rgb_mean(self) -> np.ndarray:
        return self.rgb_sum / max(self.pixels, 1)

    @property
    def rgb_covariance(self) -> np.ndarray:
        mean = self.rgb_mean
        return self.rgb_products / max(self.pixels, 1) - np.outer(mean, mean)


# ---------------------------------------------------------------------------------------------------
# transfers: (source stats, reference stats) -> a function of RGB frames


Transfer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rgb, lab) -> corrected rgb


def make_transfer(method: str, source: ColourStats, reference: ColourStats) -> Transfer:
    """The correction that gives frames like `source` the colours of `reference`."""
    if method == "lab":
        return _mean_and_spread(source, reference)
    if method == "histogram":
        return _histogram(source, reference)
    if method == "mkl":
        return _mkl(source, reference)
    raise ValueError(f"colour transfer '{method}' is unknown: choose one of {', '.join(METHODS)}")


def _mean_and_spread(source: ColourStats, reference: ColourStats) -> Transfer:
    spread_s, spread_r = source.lab_spread, reference.lab_spread
    scale = np.where(spread_s < MIN_SPREAD, 1.0, spread_r / np.maximum(spread_s, 1e-9))
    scale = np.clip(scale, 1 / MAX_SCALE, MAX_SCALE).astype(np.float32)
    shift = (reference.lab_mean - source.lab_mean * scale).astype(np.float32)

    def apply(rgb, lab):
        return lab_to_rgb(lab * scale + shift)

    return apply


def _histogram(source: ColourStats, reference: ColourStats) -> Transfer:
    """Each CIELAB channel through the reference's inverse cumulative distribution at the source's: both taken as
    piecewise linear between bin edges (values spread evenly inside a bin), evaluated on a grid of GRID_STEPS points
    per bin."""
    maps = []
    for channel, (low, high) in enumerate(HIST_RANGES):
        edges = np.linspace(low, high, HIST_BINS + 1)
        cdf_s = np.concatenate([[0.0], np.cumsum(source.histograms[channel])]) / max(source.histograms[channel].sum(), 1)
        cdf_r = np.concatenate([[0.0], np.cumsum(reference.histograms[channel])]) / max(reference.histograms[channel].sum(), 1)
        # The reference's inverse: a rising line over every bin that holds values; empty bins between two such bins are
        # a jump in value at one quantile.
        held = np.nonzero(np.diff(cdf_r) > 0)[0]
        if not len(held) or not source.histograms[channel].any():
            maps.append(None)
            continue
        quantiles = np.stack([cdf_r[held], cdf_r[held + 1]], 1).ravel()
        values = np.stack([edges[held], edges[held + 1]], 1).ravel()
        grid = np.linspace(low, high, HIST_BINS * GRID_STEPS + 1)
        targets = np.interp(np.interp(grid, edges, cdf_s), quantiles, values)
        maps.append((grid.astype(np.float32), targets.astype(np.float32)))

    def apply(rgb, lab):
        out = lab.copy()
        for channel, table in enumerate(maps):
            if table is not None:
                out[..., channel] = np.interp(lab[..., channel], *table)
        return lab_to_rgb(out)

    return apply


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T


def _mkl(source: ColourStats, reference: ColourStats) -> Transfer:
    eye = np.eye(3) * COVARIANCE_FLOOR
    cov_s, cov_r = source.rgb_covariance + eye, reference.rgb_covariance + eye
    root_s = _sqrtm(cov_s)
    inverse_root_s = np.linalg.inv(root_s)
    matrix = inverse_root_s @ _sqrtm(root_s @ cov_r @ root_s) @ inverse_root_s
    matrix, mean_s, mean_r = matrix.astype(np.float32), source.rgb_mean.astype(np.float32), reference.rgb_mean.astype(np.float32)

    def apply(rgb, lab):
        return np.clip((rgb - mean_s) @ matrix.T + mean_r, 0.0, 1.0)

    return apply


def _identity(rgb, lab):
    return rgb


# ---------------------------------------------------------------------------------------------------
# matching a whole video


@dataclass
class MatchSettings:
    method: str = "mkl"
    reference: str = "first_chunk"
    strength: float = 1.0
    ease_frames: int = 6

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is unknown: choose one of {', '.join(METHODS)}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference '{self.reference}' is unknown: choose one of {', '.join(REFERENCES)}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength {self.strength} is outside 0..1")
        if self.ease_frames < 0:
            raise ValueError(f"ease_frames {self.ease_frames} is negative")


def segment_starts(frames: int, joins: list[int]) -> list[int]:
    """First frames of the pieces a video's joins cut it into: 0 and every join (frame t: the step t-1 -> t)."""
    return [0] + [j for j in joins if 0 < j < frames]


def match_colours(frames: np.ndarray, joins: list[int], settings: MatchSettings, *, frames_per_batch: int = 16,
                  carried: list[int] | None = None, on_frames: Callable[[int], None] | None = None) -> dict:
    """Correct `frames` (a writable float32 array-like [T, H, W, 3], RGB 0..1) in place, chunk by chunk, chunks cut at
    `joins`. `carried[i]`: frames before join i that the chunk after it continued from (the reference of
    "carried_frames"; CARRIED_FRAMES when not given). Works on `frames_per_batch` frames at a time, twice over the
    video; `on_frames(n)` after each batch. Returns what was done per chunk: {"chunks": [{"first", "frames",
    "delta_e_before", "delta_e_after"}], ...}, the Delta E 2000 of each chunk's mean colour to its reference."""
    settings.check()
    total = len(frames)
    starts = segment_starts(total, sorted(set(joins)))
    bounds = list(zip(starts, starts[1:] + [total]))
    carried = list(carried) if carried else [CARRIED_FRAMES] * (len(starts) - 1)
    if len(carried) != len(starts) - 1:
        raise ValueError(f"{len(carried)} carried-frame counts for {len(starts) - 1} joins")
    # Frames each side of join i compared in carried_frames mode: no more than either chunk holds.
    sides = [max(1, min(k, first - previous, stop - first)) for k, (previous, _), (first, stop) in
             zip(carried, bounds, bounds[1:])]

    # Pass 1: each chunk's statistics, and those of its first frames (the ones right after its join).
    whole = [ColourStats() for _ in bounds]
    heads = [ColourStats() for _ in bounds]
    for first, batch in _batches(frames, frames_per_batch):
        lab = rgb_to_lab(batch)
        for chunk, (start, stop) in enumerate(bounds):
            lo, hi = max(start, first) - first, min(stop, first + len(batch)) - first
            if lo >= hi:
                continue
            whole[chunk].add(batch[lo:hi], lab[lo:hi])
            head = sides[chunk - 1] if chunk else 0
            hi_head = min(hi, start + head - first)
            if lo < hi_head:
                heads[chunk].add(batch[lo:hi_head], lab[lo:hi_head])
        if on_frames:
            on_frames(len(batch))

    # Pass 2: correct chunk by chunk, in frame order; the corrected frames before each join are its reference in
    # carried_frames mode.
    carried_mode = settings.reference == "carried_frames"
    recent: deque[ColourStats] = deque(maxlen=max(sides, default=1))
    transfers, entries = [], []
    fixed_sums = [np.zeros(3) for _ in bounds]
    head_sums = [np.zeros(3) for _ in bounds]
    ease_step, ease_done, previous_mean = None, 0, None
    for first, batch in _batches(frames, frames_per_batch):
        for chunk, (start, stop) in enumerate(bounds):
            lo, hi = max(start, first), min(stop, first + len(batch))
            if lo >= hi:
                continue
            if chunk == len(transfers):
                transfer, entry = _chunk_transfer(chunk, settings, whole, heads, sides, recent)
                transfers.append(transfer)
                entries.append({"first": start, "frames": stop - start, **entry})
            rgb = batch[lo - first : hi - first]
            lab = rgb_to_lab(rgb)
            fixed = transfers[chunk](rgb, lab)
            if settings.strength < 1:
                fixed = rgb + settings.strength * (fixed - rgb)
            fixed_lab = rgb_to_lab(fixed)
            means = fixed_lab.reshape(len(fixed), -1, 3).mean(1)
            if lo == start and chunk and settings.ease_frames:
                # The step this chunk's correction makes against the frame before the join: taken out in full at the
                # join and eased back in over ease_frames frames.
                ease_step, ease_done = means[0] - previous_mean, 0
            for i in range(len(fixed)):
                if ease_step is None:
                    break
                weight = 1 - ease_done / settings.ease_frames
                fixed_lab[i] -= (weight * ease_step).astype(np.float32)
                fixed[i] = lab_to_rgb(fixed_lab[i])
                means[i] -= weight * ease_step
                ease_done += 1
                if ease_done >= settings.ease_frames:
                    ease_step = None
            fixed_sums[chunk] += means.sum(0)
            head = sides[chunk - 1] if chunk else 0
            head_sums[chunk] += means[: max(0, start + head - lo)].sum(0)
            if carried_mode:
                for i in range(max(0, len(fixed) - recent.maxlen), len(fixed)):
                    recent.append(ColourStats.of(fixed[i], fixed_lab[i]))
            previous_mean = means[-1]
            batch[lo - first : hi - first] = fixed
        frames[first : first + len(batch)] = batch
        if on_frames:
            on_frames(len(batch))
    for chunk, entry in enumerate(entries):
        if chunk == 0:
            entry["delta_e_after"] = 0.0
            continue
        reference = whole[0].lab_mean if not carried_mode else entry.pop("_reference")
        after = fixed_sums[chunk] / entry["frames"] if not carried_mode else head_sums[chunk] / sides[chunk - 1]
        entry["delta_e_after"] = round(float(delta_e_2000(after, reference)), 3)
    return {"chunks": entries, "method": settings.method, "reference": settings.reference}


def _chunk_transfer(chunk: int, settings: MatchSettings, whole, heads, sides, recent) -> tuple[Transfer, dict]:
    if chunk == 0:
        return _identity, {"delta_e_before": 0.0}
    if settings.reference == "first_chunk":
        source, reference = whole[chunk], whole[0]
    else:
        taken = list(recent)[-sides[chunk - 1]:]
        reference = taken[0]
        for stats in taken[1:]:
            reference = reference + stats
        source = heads[chunk]
    before = float(delta_e_2000(source.lab_mean, reference.lab_mean))
    entry = {"delta_e_before": round(before, 3)}
    if settings.reference == "carried_frames":
        entry["_reference"] = reference.lab_mean
    return make_transfer(settings.method, source, reference), entry


def _batches(frames, frames_per_batch: int) -> Iterator[tuple[int, np.ndarray]]:
    for first in range(0, len(frames), frames_per_batch):
        batch = frames[first : first + frames_per_batch]
        yield first, np.asarray(batch, dtype=np.float32)
