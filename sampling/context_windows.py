"""Context windows: a Denoiser that runs its model on overlapping windows of frames and blends the predictions.

At every step the model sees at most `frames_per_window` frames at a time, so its activations (the memory that
grows with frames: spatial layers, temporal convolutions, temporal attention) stay bounded however long the
video is; only the latents themselves are full length. Windows overlap by `overlap` frames, and in the overlap
the two predictions are cross-faded with linear weights, so a frame near a window edge leans on the window that
sees it in the middle. The denoising loop is unchanged: it steps the whole video with the blended prediction.
This is how a refine pass (denoise < 1 on an upscaled latent) runs on a long video, and, with the whole video's
latents kept on the CPU and a prompt per stretch of the timeline, how co-denoising makes a long video at once
(sampling/co_denoise.py).
"""

from collections.abc import Callable

import torch

from ..models.denoiser import Denoiser, KnownFrames, take_model_facts
from ..utils.comfy import throw_if_interrupted
from .distributed import rank_share


def window_starts(frames: int, frames_per_window: int, overlap: int) -> list[int]:
    """First frames of the windows covering `frames` frames; the last window ends at the last frame."""
    if frames <= frames_per_window:
        return [0]
    stride = frames_per_window - overlap
    starts = list(range(0, frames - frames_per_window, stride))
    return starts + [frames - frames_per_window]


def window_weights(length: int, overlap_before: int, overlap_after: int) -> torch.Tensor:
    """Per-frame blend weights [length]: rising over the frames shared with the previous window, falling over those
    shared with the next one, 1 elsewhere."""
    weights = torch.ones(length)
    if overlap_before:
        weights[:overlap_before] = torch.arange(1, overlap_before + 1) / (overlap_before + 1)
    if overlap_after:
        weights[length - overlap_after :] = torch.minimum(
            weights[length - overlap_after :], torch.arange(overlap_after, 0, -1) / (overlap_after + 1)
        )
    return weights


WindowContext = Callable[[int, int], torch.Tensor]
"""window_context(start, stop): the text context of the window over frames start..stop-1 (prompts along the timeline)."""


class WindowedDenoiser(Denoiser):
    """`inner` called on windows of at most `frames_per_window` frames, overlapping by `overlap` frames.

    window_context: when given, each window's text context comes from it instead of the loop's.
    latents_on_cpu: the loop keeps the whole video's latents on the CPU (`load` says so) and only one window at a time
    goes to the model's device, so device memory does not grow with the video's length.
    comm: a Communicator (sampling/distributed.py) whose ranks share the windows of every call (rank_share): each runs
    the model on its windows and the blended sums are added up over the ranks, so every rank steps the same video.
    """

    def __init__(self, inner: Denoiser, frames_per_window: int, overlap: int, *,
                 window_context: WindowContext | None = None, latents_on_cpu: bool = False, comm=None):
        if frames_per_window < 1:
            raise ValueError(f"frames_per_window must be at least 1, got {frames_per_window}")
        if not 0 <= overlap < frames_per_window:
            raise ValueError(f"overlap must be between 0 and frames_per_window - 1 ({frames_per_window - 1}), got {overlap}")
        self.inner = inner
        self.frames_per_window = frames_per_window
        self.overlap = overlap
        take_model_facts(self, inner)
        self.window_context = window_context
        self.latents_on_cpu = latents_on_cpu
        self.comm = comm
        self.model_device = None

    def __getattr__(self, name):
        # Everything else the model offers (context_width, unet, ...) is the inner model's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def with_temporal_attention(self, scope) -> "WindowedDenoiser":
        return WindowedDenoiser(self.inner.with_temporal_attention(scope), self.frames_per_window, self.overlap,
                                window_context=self.window_context, latents_on_cpu=self.latents_on_cpu, comm=self.comm)

    def load(self) -> torch.device:
        self.model_device = self.inner.load()
        return torch.device("cpu") if self.latents_on_cpu else self.model_device

    def __call__(self, latents, timestep, context, known=None):
        frames = latents.shape[2]
        starts = window_starts(frames, self.frames_per_window, self.overlap)
        if len(starts) == 1 and not self.latents_on_cpu and self.window_context is None and self.comm is None:
            return self.inner(latents, timestep, context, known=known)
        mine = range(len(starts)) if self.comm is None else rank_share(len(starts), self.comm.rank, self.comm.world_size)
        blended = torch.zeros_like(latents)
        total_weight = torch.zeros(frames, device=latents.device)
        for number in mine:
            start, stop = starts[number], min(starts[number] + self.frames_per_window, frames)
            if number != mine.start:
                throw_if_interrupted()
            prediction = self._window(latents[:, :, start:stop], timestep, context, known_among(known, range(start, stop)), start, stop)
            before = starts[number - 1] + self.frames_per_window - start if number else 0
            after = stop - starts[number + 1] if number + 1 < len(starts) else 0
            weights = window_weights(stop - start, before, after).to(latents.device)
            blended[:, :, start:stop] += (prediction * weights.to(prediction.dtype)[:, None, None]).to(blended.dtype)
            total_weight[start:stop] += weights
        if self.comm is not None and self.comm.world_size > 1:
            blended = self.comm.all_reduce_sum(blended)
            total_weight = self.comm.all_reduce_sum(total_weight)
        return blended / total_weight.to(blended.dtype)[:, None, None]

    def _window(self, latents, timestep, context, known, start, stop):
        if self.window_context is not None:
            context = self.window_context(start, stop)
        return self.run_model(latents, timestep, context, known)

    def run_model(self, latents, timestep, context, known=None):
        """`inner` on `latents` of at most frames_per_window frames; with latents_on_cpu they go to the model's device
        and the prediction comes back."""
        if not self.latents_on_cpu:
            return self.inner(latents, timestep, context, known=known)
        device = self.model_device or self.inner.load()
        prediction = self.inner(latents.to(device), timestep.to(device), context.to(device), known=known)
        return prediction.to(latents.device)


def known_among(known: KnownFrames | None, frames) -> KnownFrames | None:
    """The known frames among `frames` (ascending frame indices of a window), re-indexed to their positions in it;
    None when there are none."""
    if known is None:
        return None
    position = {frame: number for number, frame in enumerate(frames)}
    inside = [number for number, index in enumerate(known.indices) if index in position]
    if not inside:
        return None
    return KnownFrames([position[known.indices[p]] for p in inside], known.latents[:, :, inside])
