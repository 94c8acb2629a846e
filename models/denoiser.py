"""The Denoiser interface every model wrapper implements, and the diffusers UNet3D implementation.

Strategies and the denoising loop only ever call a Denoiser: noisy latents [B, C, T, H, W], a timestep
and text conditioning in, the model's prediction (epsilon or v, see `prediction_type`) out. They never
reach into a network.
"""

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..attention.temporal import TemporalAttentionProcessor, temporal_attention_names
from ..utils.comfy import ManagedModule


@dataclass
class KnownFrames:
    """Clean latents [1 or B, C, len(indices), H, W] that the sampled clip must contain at `indices`.

    `context` [1 or B, C, c, H, W], optional: the video's latent frames just before the clip's frame 0, for an executor
    that decodes known frames (a causal video VAE decodes a frame in the context of those before it).
    """

    indices: list[int]
    latents: torch.Tensor
    context: torch.Tensor | None = None

    def check(self, shape) -> None:
        frames = shape[2]
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"known frame indices repeat: {self.indices}")
        if any(not 0 <= i < frames for i in self.indices):
            raise ValueError(f"known frame indices {self.indices} fall outside the {frames} sampled frames")
        expected = (shape[1], len(self.indices), *shape[3:])
        if self.latents.dim() != 5 or tuple(self.latents.shape[1:]) != expected or self.latents.shape[0] not in (1, shape[0]):
            raise ValueError(
                f"known latents have shape {tuple(self.latents.shape)}; expected [1 or {shape[0]}, {', '.join(map(str, expected))}]"
            )


class Denoiser:
    """What the denoising loop needs to know about a video model.

    latent_channels:    C of the latents the model works on.
    scheduler_config:   the model's diffusers scheduler config (training betas, prediction type, ...).
    takes_known_frames: whether the model was trained to take known frames itself (frame conditioning `learned`:
                        ContinuitySeq's conditioning stream, InfiNet's keyframe masks, hint channels).
    requires_known_frames: whether it cannot sample without them (ContinuitySeq only continues frames).
    downscale:          pixels per latent pixel along height and width (the VAE's factor; 1 for pixel-space models).
    sample_range:       when set, clean samples lie in [-sample_range, sample_range] and the loop clips the model's
                        clean estimate to it every step (pixel-space models, as their original samplers do).
    samples_itself:     the model brings its own executor: `denoise` hands every run to its `sample` method (ComfyUI's
                        MODEL, sampled by ComfyUI's samplers: models/comfy_model.py).
    """

    latent_channels: int
    scheduler_config: dict
    takes_known_frames: bool = False
    requires_known_frames: bool = False
    downscale: int = 8
    sample_range: float | None = None
    noise_layout: str = "frames"
    samples_itself: bool = False

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def load(self) -> torch.device:
        """Make the network ready on the compute device; returns that device."""
        raise NotImplementedError

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 known: KnownFrames | None = None) -> torch.Tensor:
        """Predict for `latents` [B, C, T, H, W] at `timestep` with text `context` [B, tokens, width].

        `known` (clean latents with batch B, only for models with `takes_known_frames`) are frames of the clip the
        model should honour; the prediction still covers every frame.
        """
        raise NotImplementedError


def call_bytes(denoiser, batch: int, frames: int, height: int, width: int) -> int | None:
    """A lower bound of the memory one model call on latents [batch, C, frames, height, width] takes beyond the
    weights, or None when the model gives none: what no machine can be short of when it runs. Windows of frames
    (LongVideoContextWindows) bound the frames of a call."""
    window, inner = getattr(denoiser, "frames_per_window", None), getattr(denoiser, "inner", None)
    if window is not None and inner is not None:
        return call_bytes(inner, batch, min(frames, window), height, width)
    estimate = getattr(type(denoiser), "estimate_call_bytes", None)
    return None if estimate is None else int(estimate(denoiser, batch, frames, height, width))


MODEL_FACTS = ("latent_channels", "scheduler_config", "takes_known_frames", "sample_range", "noise_layout", "downscale")


def take_model_facts(wrapper: Denoiser, inner) -> None:
    """Give `wrapper`, a Denoiser that runs `inner` on parts of its input (windows of frames), `inner`'s facts: latent
    channels, training schedule, whether it takes known frames, ..."""
    for name in MODEL_FACTS:
        setattr(wrapper, name, getattr(inner, name, getattr(Denoiser, name, None)))


class UNet3DDenoiser(Denoiser):
    """diffusers' UNet3DConditionModel (ModelScope text-to-video, Zeroscope) behind the Denoiser interface."""

    def __init__(self, unet, scheduler_config: dict):
        self.unet = unet
        self.managed = ManagedModule(unet)
        self.scheduler_config = dict(scheduler_config)
        self.latent_channels = unet.config.in_channels
        self.context_width = unet.config.cross_attention_dim
        self.temporal_scope = None

    def with_temporal_attention(self, scope) -> "UNet3DDenoiser":
        """A copy sharing the weights (and their placement) whose temporal attention layers use `scope`.

        The network itself is not changed: the scope's processors are installed around each call only.
        """
        clone = copy.copy(self)
        clone.temporal_scope = scope
        clone.temporal_layer_names = temporal_attention_names(self.unet)
        return clone

    def load(self) -> torch.device:
        return self.managed.load()

    def estimate_call_bytes(self, batch, frames, height, width) -> int:
        # Both guidance halves at once; 16 tensors the size of the first block's activations. Measured on the embedded
        # model on the CPU: about 32 of them at peak, growing linearly with frames and pixels (SDPA's kernels do not
        # hold the attention scores), so 16 stays below what any run needs.
        size = self.unet.dtype.itemsize
        return 16 * 2 * batch * self.unet.config.block_out_channels[0] * frames * height * width * size

    def __call__(self, latents, timestep, context, known=None):
        if known is not None:
            raise ValueError("a plain UNet3D model does not take known frames: use frame conditioning 'replace' or 'guidance'")
        dtype = self.unet.dtype
        with self._temporal_processors(timestep):
            prediction = self.unet(
                latents.to(dtype), timestep, encoder_hidden_states=context.to(latents.device, dtype), return_dict=False
            )[0]
        return prediction.to(latents.dtype)

    @contextmanager
    def _temporal_processors(self, timestep):
        if self.temporal_scope is None:
            yield
            return
        original = self.unet.attn_processors
        processor = TemporalAttentionProcessor(self.temporal_scope, float(timestep))
        patched = dict(original)
        patched.update(dict.fromkeys(self.temporal_layer_names, processor))
        self.unet.set_attn_processor(patched)
        try:
            yield
        finally:
            self.unet.set_attn_processor(original)
