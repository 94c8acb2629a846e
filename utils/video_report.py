"""Model-free figures of how a long video holds together, at its joins and over its whole length, and a plot of them.

`measure_frames` reads frame batches (float32 RGB 0..1, [n, H, W, 3]) one after another and keeps a few numbers per
frame, so memory does not grow with the frames' size, and only by those numbers with their count:

- motion: the optical flow (OpenCV's Farneback) between consecutive frames, on the frames' CIELAB colours projected
  onto their main axis of variation (so a green object on grey moves as visibly as a dark one), at FLOW_SHORT_SIDE
  (64) pixels on the short side unless asked otherwise; a step's motion is the flow's length weighted by itself
  (sum m^2 / sum m: the typical displacement of what moves, not diluted by a still background), in pixels of the
  frames;
- colour and tone: the CIELAB mean and spread per frame; brightness is the mean L*, contrast the spread of L*; a
  64-bin histogram of each CIELAB channel (on a regular sample of STATS_PIXELS pixels of a large frame);
- flicker: the mean absolute difference of consecutive frames (0..255 levels);
- sharpness: the variance of the Laplacian of the grey frame (0..255 levels).

`summarise` turns them into the report: figures at each join (the step t-1 -> t at a join frame t) against the
video's interior steps, per piece (chunk or segment) between joins, and drift over the whole video (a figure over the
first DRIFT_SHARE of the frames against the last). `draw_report` plots every figure over the frames with the joins
marked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .colour_match import delta_e_2000, rgb_to_lab

FLOW_SHORT_SIDE = 64
# Farneback at FLOW_SHORT_SIDE: pyramid scale, levels, window, iterations, polynomial size and sigma. The window is
# scaled with the flow size. (On the embedded model's continuation videos these settings give bench/quality.py's
# centroid seam ratio within 3% over 11 joins; docs/report.md.)
FARNEBACK = (0.5, 4, 15, 2, 7, 1.5)
# The colour statistics of a large frame are taken on every n-th pixel (each way), so that about this many count.
STATS_PIXELS = 16384
DRIFT_SHARE = 0.15
HIST_BINS = 64
HIST_RANGES = ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))
# A jump: a step moving more than JUMP_FACTOR x the video's median step plus JUMP_SHARE of the frame's short side
# (bench/quality.py's teleport: 3x + 2 px at 64x64).
JUMP_FACTOR, JUMP_SHARE = 3.0, 0.03


@dataclass
class FrameFigures:
    """Per-frame numbers of a video (T frames; the per-step ones have T - 1 entries, step t - 1 -> t at index t - 1)."""

    width: int = 0
    height: int = 0
    lab_mean: list = field(default_factory=list)
    lab_spread: list = field(default_factory=list)
    histograms: list = field(default_factory=list)
    sharpness: list = field(default_factory=list)
    motion: list = field(default_factory=list)
    flicker: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.lab_mean)


class FrameMeasure:
    """Takes frame batches in order and keeps FrameFigures; holds one frame of the video between batches."""

    def __init__(self, flow_size: int = FLOW_SHORT_SIDE):
        if flow_size < 16:
            raise ValueError(f"the motion is measured at {flow_size} pixels: give at least 16")
        self.flow_size = flow_size
        self.figures = FrameFigures()
        self._previous = None  # (rgb, flow image) of the last frame

    def add(self, batch: np.ndarray) -> None:
        import cv2

        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[-1] < 3:
            raise ValueError(f"frames must be [n, height, width, 3], got {list(batch.shape)}")
        figures = self.figures
        if not figures.width:
            figures.height, figures.width = batch.shape[1:3]
        elif (batch.shape[2], batch.shape[1]) != (figures.width, figures.height):
            raise ValueError(f"frames of {batch.shape[2]}x{batch.shape[1]} after frames of {figures.width}x{figures.height}")
        if not len(batch):
            return
        rgb = batch[..., :3]
        finite = np.isfinite(rgb).reshape(len(rgb), -1).all(1)
        if not finite.all():
            raise ValueError(f"frame {figures.frames + int(np.argmin(finite))} holds NaN or infinite values")
        rgb = np.clip(rgb, 0.0, 1.0)
        # Colour statistics on every n-th pixel (each way) of a large frame: about STATS_PIXELS of them.
        stride = max(1, math.isqrt(rgb.shape[1] * rgb.shape[2] // STATS_PIXELS))
        lab = rgb_to_lab(rgb[:, ::stride, ::stride])
        sampled = lab.reshape(len(lab), -1, 3)
        figures.histograms.extend(np.stack([_soft_histograms(sampled[..., c], *HIST_RANGES[c]) for c in range(3)], 1))
        previous = None if self._previous is None else self._previous
        for frame, frame_lab in zip(rgb, lab):
            mean, spread = cv2.meanStdDev(frame_lab)
            figures.lab_mean.append(mean.ravel())
            figures.lab_spread.append(spread.ravel())
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) * 255.0
            figures.sharpness.append(float(cv2.Laplacian(grey, cv2.CV_32F).var()))
            same = stride == 1 and min(figures.height, figures.width) == self.flow_size
            small = frame_lab if same else _flow_image(frame, self.flow_size)
            if previous is not None:
                figures.flicker.append(float(np.mean(cv2.mean(cv2.absdiff(frame, previous[0]))[:3]) * 255.0))
                figures.motion.append(_motion(previous[1], small, self.flow_size) * figures.height / small.shape[0])
            previous = (frame, small)
        self._previous = previous


def measure_frames(batches: Iterable, on_frames: Callable[[int], None] | None = None,
                   flow_size: int = FLOW_SHORT_SIDE) -> FrameFigures:
    """FrameFigures of a video given as frame batches ([n, H, W, 3], float RGB 0..1; numpy or torch); the motion is
    measured with the frames scaled to `flow_size` pixels on their short side."""
    measure = FrameMeasure(flow_size)
    for batch in batches:
        if hasattr(batch, "detach"):
            batch = batch.detach().float().cpu().numpy()
        measure.add(batch)
        if on_frames:
            on_frames(len(batch))
    return measure.figures


def _soft_histograms(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Normalised histograms [n, HIST_BINS] of the rows of `values` [n, m], a value shared between its two nearest bin
    centres, so that a histogram moves smoothly with the colours."""
    frames = len(values)
    position = np.clip((values - low) / (high - low) * HIST_BINS - 0.5, 0, HIST_BINS - 1)
    lower = np.floor(position).astype(np.int64)
    upper_weight = position - lower
    offsets = np.arange(frames)[:, None] * HIST_BINS
    upper = np.minimum(lower + 1, HIST_BINS - 1) + offsets
    lower += offsets
    size = frames * HIST_BINS
    counts = (np.bincount(lower.ravel(), (1 - upper_weight).ravel(), size)
              + np.bincount(upper.ravel(), upper_weight.ravel(), size)).reshape(frames, HIST_BINS)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)


def _flow_image(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """The frame scaled to `short_side` pixels on its short side, in CIELAB (float32 [h, w, 3])."""
    import cv2

    height, width = rgb.shape[:2]
    scale = short_side / min(height, width)
    if scale != 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return rgb_to_lab(rgb)


def _motion(before: np.ndarray, after: np.ndarray, short_side: int) -> float:
    """The self-weighted mean flow length (pixels at the given size) from `before` to `after` (CIELAB [h, w, 3]),
    both projected onto the main axis of `before`'s colours; Farneback's window scaled to `short_side`."""
    import cv2

    flat = before.reshape(-1, 3).astype(np.float64)
    centred = flat - flat.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axis = vectors[:, -1].astype(np.float32)
    a, b = np.ascontiguousarray(before @ axis), np.ascontiguousarray(after @ axis)
    pyramid, levels, window, iterations, poly_n, poly_sigma = FARNEBACK
    window = max(5, round(window * short_side / FLOW_SHORT_SIDE) | 1)
    flow = cv2.calcOpticalFlowFarneback(a, b, None, pyramid, levels, window, iterations, poly_n, poly_sigma, 0)
    length = np.hypot(flow[..., 0], flow[..., 1]).astype(np.float64)
    total = length.sum()
    return float((length * length).sum() / total) if total > 1e-9 else 0.0


# ---------------------------------------------------------------------------------------------------
# the report


def pieces(frames: int, joins: list[int]) -> list[tuple[int, int]]:
    """(first, stop) of the pieces joins cut a video into; a one-frame piece (a keyframe between the joins beside it)
    goes with the piece after it."""
    starts = [0] + [j for j in sorted(set(joins)) if 0 < j < frames]
    bounds = list(zip(starts, starts[1:] + [frames]))
    merged = []
    for first, stop in bounds:
        if merged and merged[-1][1] - merged[-1][0] == 1 and merged[-1][1] == first:
            first = merged.pop()[0]
        merged.append((first, stop))
    return merged


def _hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance of normalised histograms [channels, bins], averaged over channels: 0 same, 1 disjoint."""
    overlap = np.sqrt(np.clip(p, 0, None) * np.clip(q, 0, None)).sum(-1)
    return float(np.sqrt(np.clip(1 - overlap, 0, 1)).mean())


def _ratio(value: float, typical: float) -> float | None:
    return None if typical <= 1e-9 else value / typical


def _r(value, digits: int = 3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def summarise(figures: FrameFigures, joins: list[int], keyframes: list[int] = (), joins_from: str = "input") -> dict:
    """The report (a JSON-ready dict) of a video's FrameFigures; `joins` and `keyframes` in its frames."""
    frames = figures.frames
    if frames < 2:
        raise ValueError(f"a report needs at least 2 frames, got {frames}")
    joins = sorted({int(j) for j in joins if 0 < j < frames})
    lab = np.array(figures.lab_mean)
    spread = np.array(figures.lab_spread)
    histograms = np.array(figures.histograms)
    sharpness = np.array(figures.sharpness)
    motion = np.array(figures.motion)
    flicker = np.array(figures.flicker)
    colour_steps = delta_e_2000(lab[:-1], lab[1:])
    parts = pieces(frames, joins)
    edge = max(1, round(DRIFT_SHARE * frames))
    # The first piece is the colour reference; with no joins, the first DRIFT_SHARE of the frames.
    reference = slice(0, parts[0][1] if joins else edge)
    reference_lab = lab[reference].mean(0)
    reference_histogram = histograms[reference].mean(0)
    delta_e = delta_e_2000(lab, reference_lab)
    histogram_distance = np.array([_hellinger(h, reference_histogram) for h in histograms])

    join_steps = [j - 1 for j in joins]
    interior = np.ones(frames - 1, bool)
    interior[join_steps] = False
    typical = {name: float(np.median(values[interior])) if interior.any() else float("nan")
               for name, values in (("motion", motion), ("flicker", flicker), ("colour", colour_steps))}
    at_joins = [{
        "frame": j,
        "motion_px": _r(motion[j - 1]),
        "seam_ratio": _r(_ratio(motion[j - 1], typical["motion"])),
        "delta_e": _r(colour_steps[j - 1]),
        "brightness_step": _r(lab[j, 0] - lab[j - 1, 0]),
        "contrast_step": _r(spread[j, 0] - spread[j - 1, 0]),
        "flicker_ratio": _r(_ratio(flicker[j - 1], typical["flicker"])),
        "sharpness_ratio": _r(_ratio(sharpness[j], sharpness[j - 1])),
    } for j in joins]

    segments = []
    for first, stop in parts:
        steps = slice(first, stop - 1)  # the steps inside the piece
        segments.append({
            "first": first, "frames": stop - first,
            "lab_mean": [_r(v) for v in lab[first:stop].mean(0)],
            "lab_spread": [_r(v) for v in spread[first:stop].mean(0)],
            "brightness": _r(lab[first:stop, 0].mean()), "contrast": _r(spread[first:stop, 0].mean()),
            "delta_e_to_first": _r(delta_e_2000(lab[first:stop].mean(0), reference_lab)),
            "histogram_distance_to_first": _r(_hellinger(histograms[first:stop].mean(0), reference_histogram)),
            "motion_px": _r(motion[steps].mean()) if stop - first > 1 else None,
            "flicker": _r(flicker[steps].mean()) if stop - first > 1 else None,
            "sharpness": _r(sharpness[first:stop].mean()),
        })

    def drift(values: np.ndarray) -> float | None:
        if len(values) < 2:
            return None
        count = max(1, round(DRIFT_SHARE * len(values)))
        return _r(abs(values[-count:].mean(0) - values[:count].mean(0)))

    first_lab, last_lab = lab[:edge].mean(0), lab[-edge:].mean(0)
    seam_steps = motion[join_steps] if joins else np.array([])
    threshold = JUMP_FACTOR * float(np.median(motion)) + JUMP_SHARE * min(figures.width, figures.height)
    return {
        "frames": frames, "width": figures.width, "height": figures.height,
        "joins": joins, "keyframes": sorted({int(k) for k in keyframes}), "joins_from": joins_from,
        "summary": {
            "seam_ratio": _r(_ratio(seam_steps.mean(), typical["motion"])) if joins else None,
            "interior_motion_px": _r(typical["motion"]),
            "colour_step_at_joins": _r(colour_steps[join_steps].mean()) if joins else None,
            "colour_step_interior": _r(typical["colour"]),
            "flicker_seam_ratio": _r(_ratio(flicker[join_steps].mean(), typical["flicker"])) if joins else None,
            "max_delta_e_to_first": _r(delta_e.max()),
            "jumps": [t + 1 for t in np.nonzero(motion > threshold)[0].tolist()],
        },
        "drift": {
            "colour_delta_e": _r(delta_e_2000(first_lab, last_lab)),
            "delta_e_to_first": drift(delta_e),
            "histogram_distance": drift(histogram_distance),
            "brightness": drift(lab[:, 0]), "contrast": drift(spread[:, 0]),
            "a": drift(lab[:, 1]), "b": drift(lab[:, 2]),
            "a_spread": drift(spread[:, 1]), "b_spread": drift(spread[:, 2]),
            "sharpness": drift(sharpness), "flicker": drift(flicker), "motion_px": drift(motion),
        },
        "at_joins": at_joins,
        "segments": segments,
        "per_frame": {
            "motion_px": [_r(v) for v in motion], "flicker": [_r(v) for v in flicker],
            "delta_e_to_first": [_r(v) for v in delta_e], "histogram_distance": [_r(v, 4) for v in histogram_distance],
            "brightness": [_r(v) for v in lab[:, 0]], "contrast": [_r(v) for v in spread[:, 0]],
            "a": [_r(v) for v in lab[:, 1]], "b": [_r(v) for v in lab[:, 2]],
            "sharpness": [_r(v, 2) for v in sharpness],
        },
    }


# ---------------------------------------------------------------------------------------------------
# the plot

PLOT_WIDTH = 960
HEADER = 96
PANEL_HEIGHT = 210
MARGIN = 14
BACKGROUND = (30, 30, 30)
PANEL_BACKGROUND = (42, 42, 42)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
JOIN = (255, 160, 40)
JOIN_LINE = (125, 88, 45)
JUMP = (255, 70, 70)
# (per-frame key, title, colour, format, drift key, steps: whether values are per step t - 1 -> t, the least span of
# the y axis, in the figure's units or (a float below 1 after "x") as a share of its mean: changes smaller than about
# what the eye notices stay flat; whether the y axis starts at 0)
PANELS = (
    ("motion_px", "motion, px/frame", (90, 200, 255), "{:.2f}", "motion_px", True, 1.0, True),
    ("delta_e_to_first", "colour: dE2000 to the first chunk", (255, 210, 90), "{:.2f}", "colour_delta_e", False, 2.0, True),
    ("brightness", "brightness (mean L*)", (240, 240, 240), "{:.1f}", "brightness", False, 4.0, False),
    ("contrast", "contrast (spread of L*)", (200, 140, 255), "{:.2f}", "contrast", False, 2.0, False),
    ("flicker", "flicker (mean |frame - previous|)", (120, 230, 140), "{:.2f}", "flicker", True, 1.0, True),
    ("sharpness", "sharpness (Laplacian variance)", (255, 130, 170), "{:.0f}", "sharpness", False, "x0.2", True),
)


def draw_report(report: dict, title: str = "LongVideo report") -> np.ndarray:
    """The report as an RGB uint8 image [H, W, 3]: a header of the main figures and a panel per figure over the frames
    (joins as brown lines, the steps across them as orange dots, jumps as red dots), sized to stay readable where
    ComfyUI previews it."""
    from PIL import Image, ImageDraw

    columns, rows = 2, math.ceil(len(PANELS) / 2)
    panel_width = (PLOT_WIDTH - MARGIN * (columns + 1)) // columns
    height = HEADER + rows * (PANEL_HEIGHT + MARGIN) + MARGIN
    canvas = np.empty((height, PLOT_WIDTH, 3), np.uint8)
    canvas[:] = BACKGROUND
    texts = []  # (x, y, text, colour, size), drawn last with a scalable font
    summary, drift = report["summary"], report["drift"]
    joins = report["joins"]
    seam = summary["seam_ratio"]
    source = {"sampler": "from the sampler", "input": "as given"}.get(report["joins_from"], "")
    texts.append((MARGIN, 10, f"{title}: {report['frames']} frames, {report['width']}x{report['height']}, "
                               f"{len(joins)} joins {source}".rstrip(), TEXT, 26))
    line = [f"seams {seam:.2f}x the interior motion" if seam is not None else "no joins given",
            f"colour drift dE {drift['colour_delta_e']:.2f}", f"jumps {len(summary['jumps'])}"]
    texts.append((MARGIN, 50, "   ".join(line), (255, 210, 90), 24))
    for index, (key, name, colour, fmt, drift_key, steps, least_span, from_zero) in enumerate(PANELS):
        x0 = MARGIN + (index % columns) * (panel_width + MARGIN)
        y0 = HEADER + (index // columns) * (PANEL_HEIGHT + MARGIN)
        values = np.array([np.nan if v is None else v for v in report["per_frame"][key]], np.float64)
        jumps = summary["jumps"] if key == "motion_px" else []
        _panel(canvas, texts, (x0, y0, panel_width, PANEL_HEIGHT), values, report["frames"], steps, joins, jumps,
               colour, fmt, least_span, from_zero)
        value = drift.get(drift_key)
        texts.append((x0 + 10, y0 + 6, name, TEXT, 21))
        if value is not None:
            texts.append((x0 + panel_width - 150, y0 + 30, "drift " + fmt.format(value), colour, 19))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for x, y, text, colour, size in texts:
        draw.text((x, y), text, fill=colour, font=_font(size))
    return np.asarray(image)


def _panel(canvas, texts, box, values, frames, steps, joins, jumps, colour, fmt, least_span, from_zero) -> None:
    import cv2

    x0, y0, width, height = box
    canvas[y0 : y0 + height, x0 : x0 + width] = PANEL_BACKGROUND
    left, top, bottom = x0 + 64, y0 + 56, y0 + height - 28
    right = x0 + width - 12

    def x_of(frame: float) -> int:
        return round(left + (right - left) * frame / max(frames - 1, 1))

    for join in joins:
        x = x_of(join - 0.5)
        cv2.line(canvas, (x, top - 4), (x, bottom + 4), JOIN_LINE, 1)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return
    low, high = float(finite.min()), float(finite.max())
    least = float(least_span[1:]) * abs(float(finite.mean())) if isinstance(least_span, str) else least_span
    if from_zero:
        low, high = min(low, 0.0), max(high, low + least)
    elif high - low < least:
        low, high = (high + low - least) / 2, (high + low + least) / 2
    span = max(high - low, 1e-9)
    low, high = (low if from_zero else low - 0.08 * span), high + 0.08 * span

    def y_of(value: float) -> int:
        return round(bottom - (bottom - top) * (value - low) / (high - low))

    offset = 0.5 if steps else 0.0  # a step t - 1 -> t sits between its two frames
    points = np.array([(x_of(i + offset), y_of(v)) for i, v in enumerate(values) if np.isfinite(v)], np.int32)
    cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
    if steps:  # the step across each join, marked on the curve
        for join in joins:
            if 0 < join <= len(values) and np.isfinite(values[join - 1]):
                cv2.circle(canvas, (x_of(join - 1 + offset), y_of(values[join - 1])), 4, JOIN, -1, cv2.LINE_AA)
    for jump in jumps:
        if 0 < jump <= len(values) and np.isfinite(values[jump - 1]):
            cv2.circle(canvas, (x_of(jump - 1 + offset), y_of(values[jump - 1])), 5, JUMP, -1, cv2.LINE_AA)
    texts.append((x0 + 6, top - 10, fmt.format(high), MUTED, 16))
    texts.append((x0 + 6, bottom - 10, fmt.format(low), MUTED, 16))
    texts.append((left, bottom + 6, "0", MUTED, 16))
    texts.append((right - 40, bottom + 6, str(frames - 1), MUTED, 16))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: one small bitmap font
        return ImageFont.load_default()
