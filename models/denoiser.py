"""The Denoiser interface every model wrapper implements, and the diffusers UNet3D implementation.

Strategies and the denoising loop only ever call a Denoiser: noisy latents [B, C, T, H, W], a timestep
and text conditioning in, the model's prediction (epsilon or v, see `prediction_type`) out. They never
reach into a network.
"""

import torch

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

    def __init__(self, unet, scheduler_config: dict, name: str = ""):
        self.unet = unet
        self.managed = ManagedModule(unet)
        self.scheduler_config = dict(scheduler_config)
        self.latent_channels = unet.config.in_channels
        self.context_width = unet.config.cross_attention_dim
        self.name = name

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def load(self) -> torch.device:
        return self.managed.load()

    def __call__(self, latents, timestep, context):
        dtype = self.unet.dtype
        prediction = self.unet(
            latents.to(dtype), timestep, encoder_hidden_states=context.to(latents.device, dtype), return_dict=False
        )[0]
        return prediction.to(latents.dtype)
