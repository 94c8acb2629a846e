"""Inpainting-style UNet3Ds that take known frames through extra input channels, behind the Denoiser interface.

The network is a diffusers UNet3DConditionModel with in_channels = 2 * C + 1 and out_channels = C. Its input is
[noisy latents (C) | mask (1) | known latents (C)], the Stable Diffusion inpainting order. The noisy latents are
scaled by the scheduler (`scale_model_input`); the mask and known latents are not. Two layouts share these shapes
and are told apart by `known_frames_input` in unet/config.json:

- "hint" (the default: lxj616's "longer video" interpolation UNet): the mask is all zeros ("masked nothing") and
  the hint of frame j is the clean latent of the last known frame at or before j: with known frames at multiples
  of k that is input frame floor(j / k), repeated over the k frames it starts (`repeat_interleave(k)`); frames
  before the first known frame take the first one. It needs known frames: it is an interpolation model only.
- "mask" (the pack's embedded model, tools/train_tiny_model.py): the mask is 1 at known frames and 0 elsewhere,
  and the known channels hold the clean latents at known frames and zeros elsewhere, any pattern (the first k
  frames, both ends, every k-th, none). With no known frames both are zero and the model is a text-to-video model.
"""

import torch

from .denoiser import KnownFrames, UNet3DDenoiser


KNOWN_FRAMES_INPUT_KEY = "known_frames_input"
HINT_LAYOUT, MASK_LAYOUT = "hint", "mask"


def known_frames_layout(unet_config: dict) -> str:
    """"hint" or "mask" for an inpainting-style UNet config (see the module docstring)."""
    layout = unet_config.get(KNOWN_FRAMES_INPUT_KEY, HINT_LAYOUT)
    if layout not in (HINT_LAYOUT, MASK_LAYOUT):
        raise ValueError(f"unet/config.json says {KNOWN_FRAMES_INPUT_KEY} '{layout}': known are '{HINT_LAYOUT}' "
                         f"(lxj616's interpolation UNet) and '{MASK_LAYOUT}' (mask of known frames + their latents)")
    return layout


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
    requires_known_frames = True

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


class MaskUNet3DDenoiser(UNet3DDenoiser):
    """A UNet3D trained with a known-frame mask and the known latents as input (layout "mask"): text to video without
    known frames, and continuation, infill and interpolation with them (frame conditioning 'learned')."""

    takes_known_frames = True

    def __init__(self, unet, scheduler_config: dict):
        super().__init__(unet, scheduler_config)
        self.latent_channels = unet.config.out_channels

    def __call__(self, latents, timestep, context, known: KnownFrames | None = None):
        batch, channels, frames, height, width = latents.shape
        mask = latents.new_zeros(batch, 1, frames, height, width)
        given = latents.new_zeros(batch, channels, frames, height, width)
        if known is not None:
            index = torch.tensor(known.indices, device=latents.device)
            mask[:, :, index] = 1
            given[:, :, index] = known.latents.to(latents.device, latents.dtype).expand(batch, -1, -1, -1, -1)
        return super().__call__(torch.cat([latents, mask, given], dim=1), timestep, context)
