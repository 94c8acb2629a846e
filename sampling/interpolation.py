"""Latent frame interpolation (lxj616's "longer video": 5 -> 17 -> 65 frames) on the shared frame conditioning.

One pass turns N frames into (N - 1) * k + 1: input frame i becomes output frame i * k, and the k - 1 frames of
every gap between two inputs are sampled with the input frames as known frames (frame conditioning `replace`,
`guidance` or `learned`). The output holds the input frames exactly at multiples of k, whatever the method. Passes
repeat this on their own output: N -> (N - 1) * k**passes + 1.

Long inputs are split into windows of `window` input frames, neighbours sharing `overlap` input frames; every window
is one run of the denoising loop over (window - 1) * k + 1 frames, and only that window is on the device. Stitching:
each gap is taken from the one window that holds it farthest from its ends (where that window sees most context on
both sides), and the frames at multiples of k come from the input. So every seam between windows lies on a known
frame, which is exact in every window, and the output never mixes two windows inside a gap.

Noise: frame j of pass p starts from noise drawn from a seed derived from (seed, p, j) alone, so a frame starts from
the same noise whichever window samples it, and a model that sees frames one at a time gives the same result with any
window size.
"""

import bisect
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..attention.temporal import WindowAttention
from .denoise import TextGuidance, denoise
from .frame_conditioning import (BLEND_STRENGTH, METHODS, KnownFrames, check_blend_strength, check_frame_guidance,
                                 check_model_takes, make_conditioning)

log = logging.getLogger(__name__)


@dataclass
class InterpolationSettings:
    """factor: k, output frames per input gap; passes: how often to interpolate; window / overlap: input frames per
    window and shared by neighbouring windows; attention_window: sliding-window temporal attention (frames each frame
    sees) when a window samples more frames than this, 0 keeps the model's own attention."""

    factor: int = 4
    passes: int = 1
    method: str = "replace"
    guidance_weight: float = 1.0
    window: int = 17
    overlap: int = 4
    attention_window: int = 17
    blend_strength: float = BLEND_STRENGTH
    frame_guidance: float = 1.0  # learned only: the known frames' own guidance scale (frame_conditioning.py)

    def check(self, denoiser=None) -> None:
        """`denoiser`, when given, is the model the settings will run: frame guidance other than 1 needs one that also
        samples without known frames."""
        check_blend_strength(self.blend_strength)
        check_frame_guidance(self.frame_guidance, denoiser if self.method == "learned" else None)
        if self.factor < 2:
            raise ValueError(f"factor must be at least 2 (one new frame per gap), got {self.factor}")
        if self.passes < 1:
            raise ValueError(f"passes must be at least 1, got {self.passes}")
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is unknown: choose one of {', '.join(METHODS)}")
        if self.window < 2:
            raise ValueError(f"window must hold at least 2 input frames, got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"overlap must be at least 1 and below the window ({self.window}), got {self.overlap}")
        if self.attention_window < 0:
            raise ValueError(f"attention window must be 0 (the model's own attention) or more, got {self.attention_window}")


@dataclass(frozen=True)
class Window:
    """Input frames start .. stop - 1, and the gaps (gap i lies between inputs i and i + 1) this window supplies."""

    start: int
    stop: int
    gaps: tuple[int, ...]


def output_frames(frames: int, factor: int, passes: int = 1) -> int:
    for _ in range(passes):
        frames = (frames - 1) * factor + 1
    return frames


def plan_windows(frames: int, window: int, overlap: int) -> list[Window]:
    """Windows covering `frames` input frames, each gap owned by the window holding it farthest from its ends."""
    if frames <= window:
        return [Window(0, frames, tuple(range(frames - 1)))]
    stride = window - overlap
    starts = list(range(0, frames - window, stride)) + [frames - window]
    owned = {start: [] for start in starts}
    for gap in range(frames - 1):
        # Gap i needs inputs i and i + 1: windows with i - window + 2 <= start <= i.
        holders = starts[bisect.bisect_left(starts, gap - window + 2) : bisect.bisect_right(starts, gap)]
        best = max(holders, key=lambda start: (min(gap - start, start + window - 2 - gap), -start))
        owned[best].append(gap)
    return [Window(start, start + window, tuple(owned[start])) for start in starts]


def check_model(denoiser, frames: int, settings: InterpolationSettings) -> None:
    """Refuse, before anything is sampled, a method a model with its own executor cannot honour on the windows of
    `frames` input frames (frame_conditioning.check_model_takes)."""
    try:
        check_model_takes(denoiser, settings.method, window_patterns(frames, settings), settings.frame_guidance)
    except ValueError as error:
        if settings.method == "learned" and settings.window > 2:
            raise ValueError(f"{error}: set window to 2 (overlap 1), so that every run fills one gap between two "
                             "known frames") from None
        raise


def window_patterns(frames: int, settings: InterpolationSettings) -> list[tuple[list[int], int]]:
    """(known indices, sampled frames) of the windows of every pass over `frames` input frames."""
    patterns = []
    for _ in range(settings.passes):
        sampled = output_frames(min(frames, settings.window), settings.factor)
        patterns.append((list(range(0, sampled, settings.factor)), sampled))
        frames = output_frames(frames, settings.factor)
    return patterns


def count_model_runs(frames: int, settings: InterpolationSettings) -> int:
    """How many windows all passes sample (each runs `steps` steps): for progress bars."""
    runs = 0
    for _ in range(settings.passes):
        runs += len(plan_windows(frames, settings.window, settings.overlap))
        frames = output_frames(frames, settings.factor)
    return runs


def derived_seed(*parts) -> int:
    digest = hashlib.sha256(":".join(["longvideo-interpolation", *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def frame_noise(seed: int, pass_index: int, frames: range, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise [B, C, len(frames), H, W] for output frames `frames`; each frame's noise depends only on
    (seed, pass, frame). `shape` is [B, C, 1, H, W]."""
    return torch.cat([
        torch.randn(shape, generator=torch.Generator("cpu").manual_seed(derived_seed(seed, pass_index, frame)))
        for frame in frames
    ], dim=2)


def interpolate_latents(
    denoiser,
    guidance: TextGuidance,
    latents: torch.Tensor,
    settings: InterpolationSettings,
    *,
    steps: int,
    seed: int,
    scheduler: str = "ddim",
    on_step: Callable[[int, int, int], None] | None = None,
) -> torch.Tensor:
    """Interpolate `latents` [B, C, N, H, W]; returns [B, C, (N - 1) * k**passes + 1, H, W] (float32, CPU) holding
    the input at multiples of k**passes. `on_step(pass, window, step)` runs after every step (progress, cancel)."""
    settings.check(denoiser)
    if latents.dim() != 5 or latents.shape[2] < 2:
        raise ValueError(f"interpolation needs latents [batch, channels, frames >= 2, height, width], got {tuple(latents.shape)}")
    check_model(denoiser, latents.shape[2], settings)
    if settings.method == "learned" and not denoiser.takes_known_frames:
        raise ValueError("method 'learned' needs a model that takes known frames (a hint-channel interpolation UNet, "
                         "the embedded longvideo-shapes)")
    if settings.method != "learned" and denoiser.requires_known_frames:
        raise ValueError("this model takes its known frames itself (hint channels): use method 'learned'")
    current = latents.float().cpu()
    total = output_frames(latents.shape[2], settings.factor, settings.passes)
    for pass_index in range(settings.passes):
        # Pass p's output frame i is frame i * k**(passes - 1 - p) of the final video (for_frames cuts prompts to it).
        spacing = settings.factor ** (settings.passes - 1 - pass_index)
        current = _interpolate_once(denoiser, guidance, current, settings, pass_index, steps, seed, scheduler, on_step,
                                    (spacing, total))
    return current


def _interpolate_once(denoiser, guidance, latents, settings, pass_index, steps, seed, scheduler, on_step, placement):
    k = settings.factor
    batch, channels, frames, height, width = latents.shape
    out = torch.empty(batch, channels, output_frames(frames, k), height, width)
    out[:, :, ::k] = latents
    windows = plan_windows(frames, settings.window, settings.overlap)
    sampled = output_frames(windows[0].stop - windows[0].start, k)  # every window has the same length
    model = _with_window_attention(denoiser, settings.attention_window, sampled)
    spacing, total = placement
    for window_index, window in enumerate(windows):
        known = KnownFrames(list(range(0, sampled, k)), latents[:, :, window.start : window.stop])
        frames = [spacing * frame for frame in range(window.start * k, window.start * k + sampled)]
        result = denoise(
            model, guidance.for_frames(frames, total), (batch, channels, sampled, height, width), steps=steps,
            seed=derived_seed(seed, pass_index, "window", window.start), scheduler=scheduler,
            conditioning=make_conditioning(settings.method, known, settings.guidance_weight, denoiser.prediction_type,
                                           settings.blend_strength, settings.frame_guidance),
            noise=frame_noise(seed, pass_index, range(window.start * k, window.start * k + sampled), (batch, channels, 1, height, width)),
            callback=None if on_step is None else (lambda step, total, _, w=window_index: on_step(pass_index, w, step)),
        )
        for gap in window.gaps:
            local = (gap - window.start) * k
            out[:, :, gap * k + 1 : (gap + 1) * k] = result[:, :, local + 1 : local + k]
    return out


def _with_window_attention(denoiser, attention_window: int, frames: int):
    if not attention_window or frames <= attention_window:
        return denoiser
    if not hasattr(denoiser, "with_temporal_attention"):
        log.warning("this model has no replaceable temporal attention; sampling %d frames with its own attention", frames)
        return denoiser
    return denoiser.with_temporal_attention(WindowAttention(window=attention_window))
