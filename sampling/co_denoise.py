"""Co-denoising: the whole video denoised at once as overlapping windows whose predictions are fused every step.

A training-free way to make a long video hold together with any model (Gen-L-Video's co-denoising, FreeNoise's
noise rescheduling). Continuation and infill tie new frames to known ones only through the model, which for many
models barely couples frames at high noise: the new frames' layout is decided before the known frames can pull it,
and the object jumps at the seam. Here every frame is denoised at every step, inside windows of the model's length
that overlap (sampling/context_windows.py cross-fades their predictions), so the video has no window seam. Windows
alone do not make neighbouring windows agree on the layout: each decides it from its own noise at the first steps,
and a model that relates frames weakly at high noise (the embedded one) then puts the object in two places and it
jumps from one to the other in their overlap. `layout_share` runs the noisiest steps as one window spread over the
whole video (LayoutWindow), so one model call decides the layout (docs/coherence.md, "The layout window").

- Prompts along the timeline: prompt i of m covers frames [i * T / m, (i + 1) * T / m); a window takes the prompt
  of its middle frame.
- Noise "freenoise": the first window's noise is drawn from the seed and every later stretch of `stride` frames
  reuses those frames' noise in a random order (FreeNoise's rescheduling), so windows start alike and keep the
  same object; "independent" draws every frame's noise on its own.
- Memory: the whole video's latents stay on the CPU; only one window at a time goes to the model's device, so device
  memory is that of one window whatever the length. The CPU holds the latents and the scheduler's state (a few
  copies of the latents).
- Known frames (`start`: a clip or image to continue) are honoured over the whole video with 'replace' or 'learned'.

Cost: each step runs the model on ceil((T - window) / stride) + 1 windows, so about window / stride times the frames;
a layout step on one window.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.denoiser import Denoiser, take_model_facts
from .context_windows import WindowedDenoiser, known_among, window_starts
from .denoise import TextGuidance, alpha_bar, clean_estimate, denoise, prediction_from_clean
from .frame_conditioning import KnownFrames, blend_along_time, make_conditioning
from .schedulers import make_scheduler

NOISE_KINDS = ("freenoise", "independent")
CO_DENOISE_METHODS = ("replace", "learned")
LAYOUT_SHARE = 0.4
# Where a window is in time for the model: a clip of its own, or its frames' place in the video (rotary positions).
POSITIONS = ("relative", "absolute")


@dataclass
class CoDenoiseSettings:
    frames: int
    frames_per_window: int = 16
    overlap: int = 8
    noise: str = "freenoise"
    method: str = "replace"
    layout_share: float = LAYOUT_SHARE
    positions: str = "relative"

    @property
    def stride(self) -> int:
        return self.frames_per_window - self.overlap

    def check(self, denoiser=None) -> None:
        """`denoiser`, when given, is the model the settings will run: 'absolute' positions need one whose frame
        positions can move (ComfyUI's Wan)."""
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
        if not 0.0 <= self.layout_share <= 1.0:
            raise ValueError(f"layout_share must be between 0 and 1, got {self.layout_share}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions '{self.positions}' is unknown: choose one of {', '.join(POSITIONS)}")
        if self.positions != "relative" and denoiser is not None:
            check = getattr(denoiser, "check_window_positions", None)
            if check is None:
                raise ValueError("window positions 'absolute' set a window's rotary frame positions, which the pack's "
                                 "UNet3D models do not have (their temporal attention is relative): use 'relative'")
            check(self.positions)


@dataclass(frozen=True)
class WindowPlan:
    """Co-denoising's windows for an executor that runs them inside its own sampling (ComfyUI's models:
    models/comfy_windows.py): window size and overlap, the prompts along the timeline, the layout steps (the first
    `layout_steps` steps run one layout window), the window positions and the ranks sharing the windows."""

    frames: int
    frames_per_window: int
    overlap: int
    prompts: int
    layout_steps: int
    positions: str = "relative"
    comm: object = None

    def window_prompt(self, start: int, stop: int) -> int:
        """Which timeline prompt the window over frames start..stop-1 takes (timeline_prompt's rule)."""
        return timeline_prompt(list(range(self.prompts)), self.frames, start, stop)

    def layout_frames(self) -> list[int]:
        return layout_frames(self.frames, self.frames_per_window)


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


def layout_frames(frames: int, frames_per_window: int) -> list[int]:
    """The frames of the layout window: `frames_per_window` of them (fewer for a short video) spread evenly from the
    first frame to the last."""
    count = min(frames, frames_per_window)
    return sorted({round(i * (frames - 1) / max(count - 1, 1)) for i in range(count)})


class LayoutWindow(Denoiser):
    """The whole video's layout from one window at the noisiest steps; `windows` predicts at the others.

    Above timestep `until` the model sees only the layout frames (layout_frames: a window's worth spread over the whole
    video), in one call with `context` (co-denoising gives it the prompt of the video's middle frame); every other frame's
    clean estimate is the linear mix of those of the layout frames before and after it. So one call decides where things
    are in the whole video, where windows of neighbouring frames, each deciding from its own noise, can settle on two
    places for the object. One call, not one per prompt along the timeline: calls with different prompts decide apart
    too, and the object jumped where their frames met. The later steps, in ordinary overlapping windows with their own
    prompts, add the motion between layout frames. Device memory stays that of one window.
    """

    def __init__(self, windows: WindowedDenoiser, context: torch.Tensor, until: float,
                 alpha_of: Callable[[torch.Tensor], torch.Tensor]):
        self.windows = windows
        self.context = context
        self.until = until
        self.alpha_of = alpha_of
        take_model_facts(self, windows)

    def load(self) -> torch.device:
        return self.windows.load()

    def __call__(self, latents, timestep, context, known=None):
        if float(timestep) <= self.until:
            return self.windows(latents, timestep, context, known=known)
        frames = latents.shape[2]
        layout = layout_frames(frames, self.windows.frames_per_window)
        x = latents[:, :, layout]
        comm = self.windows.comm
        if comm is None or comm.world_size == 1:
            prediction = self.windows.run_model(x, timestep, self.context, known_among(known, layout))
        else:  # one call: rank 0 makes it, the others add nothing to the sum that hands it to every rank
            prediction = (self.windows.run_model(x, timestep, self.context, known_among(known, layout)).to(x.dtype)
                          if comm.rank == 0 else torch.zeros_like(x))
            prediction = comm.all_reduce_sum(prediction)
        alpha = self.alpha_of(timestep).to(latents.device)
        clean = clean_estimate(prediction, x, alpha, self.prediction_type)
        clean_everywhere = blend_along_time(KnownFrames(layout, clean), latents.shape).to(latents.device, prediction.dtype)
        return prediction_from_clean(clean_everywhere, latents, alpha, self.prediction_type)


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
    comm=None,
) -> torch.Tensor:
    """Latents [B, C, frames, H, W] on the CPU; `size` is (batch, height, width) of the latents. `start` (a clip
    [B or 1, C, k, H, W]) becomes the first k frames, kept exactly. `on_step(step, total)` after every step.

    `comm` (a Communicator, sampling/distributed.py) shares every step's windows among its ranks (WindowedDenoiser);
    each rank runs the same loop on the whole video, so they all end with the one-process video. The layout window is
    one model call, made by rank 0."""
    settings.check(denoiser)
    if not prompts:
        raise ValueError("co-denoising needs at least one prompt")
    if len({p.uses_cfg for p in prompts}) > 1:
        raise ValueError("every prompt along the timeline must use guidance alike (same negative and cfg)")
    batch, height, width = size
    shape = (batch, denoiser.latent_channels, settings.frames, height, width)
    noise = None
    if settings.noise == "freenoise":
        noise = rescheduled_noise(shape, settings.frames_per_window, settings.stride, seed)
    conditioning = None
    if start is not None:
        if start.shape[2] >= settings.frames:
            raise ValueError(f"the start clip has {start.shape[2]} frames: make frames larger so that new frames follow it")
        known = KnownFrames(list(range(start.shape[2])), start.float().cpu())
        conditioning = make_conditioning(settings.method, known)
    callback = None if on_step is None else (lambda step, total, _: on_step(step, total))
    if getattr(denoiser, "samples_itself", False):
        layout = round(settings.layout_share * steps) if settings.frames > settings.frames_per_window else 0
        plan = WindowPlan(settings.frames, settings.frames_per_window, settings.overlap, len(prompts), layout,
                          settings.positions, comm)
        return denoise(denoiser.with_windows(plan, prompts), prompts[0], shape, steps=steps, seed=seed,
                       scheduler=scheduler, conditioning=conditioning, noise=noise, callback=callback)
    contexts = [p.context(batch) for p in prompts]
    windowed = WindowedDenoiser(
        denoiser, settings.frames_per_window, settings.overlap, latents_on_cpu=True,
        window_context=lambda first, stop: timeline_prompt(contexts, settings.frames, first, stop), comm=comm,
    )
    denoiser_for_steps = windowed
    layout_steps = round(settings.layout_share * steps)
    if layout_steps and settings.frames > settings.frames_per_window:
        sampler = make_scheduler(scheduler, denoiser.scheduler_config)
        sampler.set_timesteps(steps)
        timesteps = [float(t) for t in sampler.timesteps]
        until = -math.inf if layout_steps >= len(timesteps) else (timesteps[layout_steps - 1] + timesteps[layout_steps]) / 2
        middle_prompt = timeline_prompt(contexts, settings.frames, 0, settings.frames)
        denoiser_for_steps = LayoutWindow(windowed, middle_prompt, until, lambda timestep: alpha_bar(sampler, timestep.cpu()))
    return denoise(denoiser_for_steps, prompts[0], shape, steps=steps, seed=seed, scheduler=scheduler,
                   conditioning=conditioning, noise=noise, callback=callback)


def windows_per_step(settings: CoDenoiseSettings) -> int:
    return len(window_starts(settings.frames, settings.frames_per_window, settings.overlap))
