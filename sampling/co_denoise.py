"""Co-denoising: the whole video denoised at once as overlapping windows whose predictions are fused every step.

A training-free way to make a long video hold together with any model (Gen-L-Video's co-denoising, FreeNoise's
noise rescheduling). Continuation and infill tie new frames to known ones only through the model, which for many
models barely couples frames at high noise: the new frames' layout is decided before the known frames can pull it,
and the object jumps at the seam. Here every frame is denoised at every step, inside windows of the model's length
that overlap (sampling/context_windows.py cross-fades their predictions), so the video has no window seam. Whether
neighbouring windows agree on the layout is still up to the model: the embedded model, which relates frames weakly at
high noise, sometimes settles on two places for the object in neighbouring windows, and it fades from one to the
other in their overlap (docs/coherence.md, "Teleports").

- Prompts along the timeline: prompt i of m covers frames [i * T / m, (i + 1) * T / m); a window takes the prompt
  of its middle frame.
- Noise "freenoise": the first window's noise is drawn from the seed and every later stretch of `stride` frames
  reuses those frames' noise in a random order (FreeNoise's rescheduling), so windows start alike and keep the
  same object; "independent" draws every frame's noise on its own.
- Memory: the whole video's latents stay on the CPU; only one window at a time goes to the model's device, so device
  memory is that of one window whatever the length. The CPU holds the latents and the scheduler's state (a few
  copies of the latents).
- Known frames (`start`: a clip or image to continue) are honoured over the whole video with 'replace' or 'learned'.

Cost: each step runs the model on ceil((T - window) / stride) + 1 windows, so about window / stride times the frames.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .context_windows import WindowedDenoiser, window_starts
from .denoise import TextGuidance, denoise
from .frame_conditioning import KnownFrames, make_conditioning

NOISE_KINDS = ("freenoise", "independent")
CO_DENOISE_METHODS = ("replace", "learned")


@dataclass
class CoDenoiseSettings:
    frames: int
    frames_per_window: int = 16
    overlap: int = 8
    noise: str = "freenoise"
    method: str = "replace"

    @property
    def stride(self) -> int:
        return self.frames_per_window - self.overlap

    def check(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.frames_per_window < 2:
            raise ValueError(f"frames_per_window must be at least 2, got {self.frames_per_window}")
        if not 0 <= self.overlap < self.frames_per_window:
            raise ValueError(f"overlap must be between 0 and frames_per_window - 1 ({self.frames_per_window - 1}), got {self.overlap}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"noise '{self.noise}' is unknown: choose one of {', '.join(NOISE_KINDS)}")
        if self.method not in CO_DENOISE_METHODS:
            raise ValueError(f"method '{self.method}' is unknown for co-denoising: choose one of {', '.join(CO_DENOISE_METHODS)}")


def rescheduled_noise(shape: tuple[int, ...], window: int, stride: int, seed: int) -> torch.Tensor:
    """FreeNoise's noise [B, C, T, H, W]: the first `window` frames drawn from `seed`, every later stretch of `stride`
    frames a random choice (without repeats) of those frames' noise."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    batch, channels, frames, height, width = shape
    first = torch.randn((batch, channels, min(window, frames), height, width), generator=generator)
    parts, made = [first], first.shape[2]
    while made < frames:
        order = torch.randperm(first.shape[2], generator=generator)[: max(1, min(stride, frames - made))]
        parts.append(first.index_select(2, order))
        made += len(order)
    return torch.cat(parts, dim=2)


def timeline_prompt(prompts: list, frames: int, start: int, stop: int):
    """The prompt of the window over frames start..stop-1: the one whose stretch holds the window's middle frame."""
    middle = (start + stop - 1) / 2
    return prompts[min(int(middle * len(prompts) / frames), len(prompts) - 1)]


def co_denoise_video(
    denoiser,
    prompts: list[TextGuidance],
    settings: CoDenoiseSettings,
    *,
    size: tuple[int, int, int],
    steps: int,
    seed: int,
    scheduler: str = "ddim",
    start: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Latents [B, C, frames, H, W] on the CPU; `size` is (batch, height, width) of the latents. `start` (a clip
    [B or 1, C, k, H, W]) becomes the first k frames, kept exactly. `on_step(step, total)` after every step."""
    settings.check()
    if not prompts:
        raise ValueError("co-denoising needs at least one prompt")
    if len({p.uses_cfg for p in prompts}) > 1:
        raise ValueError("every prompt along the timeline must use guidance alike (same negative and cfg)")
    batch, height, width = size
    shape = (batch, denoiser.latent_channels, settings.frames, height, width)
    contexts = [p.context(batch) for p in prompts]
    windowed = WindowedDenoiser(
        denoiser, settings.frames_per_window, settings.overlap, latents_on_cpu=True,
        window_context=lambda first, stop: timeline_prompt(contexts, settings.frames, first, stop),
    )
    noise = None
    if settings.noise == "freenoise":
        noise = rescheduled_noise(shape, settings.frames_per_window, settings.stride, seed)
    conditioning = None
    if start is not None:
        if start.shape[2] >= settings.frames:
            raise ValueError(f"the start clip has {start.shape[2]} frames: make frames larger so that new frames follow it")
        known = KnownFrames(list(range(start.shape[2])), start.float().cpu())
        conditioning = make_conditioning(settings.method, known)
    return denoise(windowed, prompts[0], shape, steps=steps, seed=seed, scheduler=scheduler, conditioning=conditioning,
                   noise=noise, callback=None if on_step is None else (lambda step, total, _: on_step(step, total)))


def windows_per_step(settings: CoDenoiseSettings) -> int:
    return len(window_starts(settings.frames, settings.frames_per_window, settings.overlap))
