"""The Denoiser interface every model wrapper implements, and the diffusers UNet3D implementation.

Strategies and the denoising loop only ever call a Denoiser: noisy latents [B, C, T, H, W], a timestep
and text conditioning in, the model's prediction (epsilon or v, see `prediction_type`) out. They never
reach into a network.
"""

import copy
from contextlib import contextmanager

import torch

from ..attention.temporal import TemporalAttentionProcessor, temporal_attention_names
from ..utils.comfy import ManagedModule


class Denoiser:
    """What the denoising loop needs to know about a video model.

    latent_channels:  C of the latents the model works on.
    scheduler_config: the model's diffusers scheduler config (training betas, prediction type, ...).
    """

    latent_channels: int
    scheduler_config: dict

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def load(self) -> torch.device:
        """Make the network ready on the compute device; returns that device."""
        raise NotImplementedError

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Predict for `latents` [B, C, T, H, W] at `timestep` with text `context` [B, tokens, width]."""
        raise NotImplementedError


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

    def __call__(self, latents, timestep, context):
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
