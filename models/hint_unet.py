"""Inpainting-style interpolation UNet3D (lxj616's "longer video" setup) behind the Denoiser interface.

The network is a diffusers UNet3DConditionModel with in_channels = 2 * C + 1 and out_channels = C. Its input is
[noisy latents (C) | mask (1) | hint latents (C)], the Stable Diffusion inpainting order. As lxj616 trained it, the
mask is all zeros ("masked nothing") and the hint of frame j is the clean latent of the last known frame at or
before j: with known frames at multiples of k (interpolation) that is input frame floor(j / k), repeated over the k
frames it starts (`repeat_interleave(k)`); frames before the first known frame take the first one. The noisy latents
are scaled by the scheduler (`scale_model_input`); the mask and hint are not.
"""

import torch

from .denoiser import KnownFrames, UNet3DDenoiser


def is_hint_unet(unet_config: dict) -> bool:
    """Whether a UNet3D config describes an inpainting-style hint model: in_channels == 2 * out_channels + 1."""
    return unet_config.get("in_channels") == 2 * unet_config.get("out_channels", 4) + 1


def hint_indices(frames: int, known_indices: list[int]) -> list[int]:
    """For every frame j, the position in `known_indices` of the last known frame at or before j (the first one
    for frames before it). With known frames 0, k, 2k, ... this is floor(j / k)."""
    order = sorted(range(len(known_indices)), key=lambda position: known_indices[position])
    positions, current = [], order[0]
    pointer = 0
    for frame in range(frames):
        while pointer < len(order) and known_indices[order[pointer]] <= frame:
            current = order[pointer]
            pointer += 1
        positions.append(current)
    return positions


class HintUNet3DDenoiser(UNet3DDenoiser):
    """A UNet3D interpolation model that takes known frames through mask and hint channels (method 'learned')."""

    takes_known_frames = True

    def __init__(self, unet, scheduler_config: dict):
        super().__init__(unet, scheduler_config)
        self.latent_channels = unet.config.out_channels

    def __call__(self, latents, timestep, context, known: KnownFrames | None = None):
        if known is None:
            raise ValueError(
                "this model interpolates between known frames (mask and hint channels): use it with "
                "LongVideoLatentInterpolate and method 'learned', not as a text-to-video sampler"
            )
        batch, _, frames, height, width = latents.shape
        index = torch.tensor(hint_indices(frames, known.indices), device=latents.device)
        hint = known.latents.to(latents.device, latents.dtype).index_select(2, index).expand(batch, -1, -1, -1, -1)
        mask = latents.new_zeros(batch, 1, frames, height, width)
        return super().__call__(torch.cat([latents, mask, hint], dim=1), timestep, context)
