"""Upscaling video latents [B, C, T, H, W] frame by frame: by interpolation, or with a diffusers latent upscaler.

Both work on frame batches, so the only full-length tensors are the input and output latents. The model
path reproduces diffusers' `StableDiffusionLatentUpscalePipeline(..., output_type="latent")` on each frame
batch, as ContinuitySeq's `--upscale` drives it: the latents go in as they are (already multiplied by the VAE
scaling factor, which is what the pipeline expects of latent input) and come out 2x in height and width, in
the same scaling. The noise is drawn frame by frame from one CPU generator, so the result does not depend on
the batch size.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..models.latent_upscaler import LatentUpscaler

INTERPOLATION_METHODS = ("nearest", "bilinear", "bicubic", "area")
MODEL_SCALE = 2


def _frames(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (a view when possible), frames of video 0 first."""
    batch, channels, frames, height, width = latents.shape
    return latents.transpose(1, 2).reshape(batch * frames, channels, height, width)


def _video_output(latents: torch.Tensor, size: tuple[int, int], dtype: torch.dtype):
    """An empty output [B, C, T, h, w] and its frame-major view [B, T, C, h, w] that batches are written into."""
    batch, channels, frames = latents.shape[:3]
    output = torch.empty((batch, frames, channels, *size), dtype=dtype, device=latents.device)
    return output.permute(0, 2, 1, 3, 4), output.view(batch * frames, channels, *size)


def interpolate_latents(latents: torch.Tensor, size: tuple[int, int], method: str, frames_per_batch: int = 64) -> torch.Tensor:
    """Resize every frame of `latents` [B, C, T, H, W] to `size` (h, w) with `method` (INTERPOLATION_METHODS).

    Computed in float32 (half-precision bicubic is not available everywhere) and returned in the input dtype.
    """
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"interpolation method '{method}' is unknown: choose one of {', '.join(INTERPOLATION_METHODS)}")
    frames = _frames(latents)
    result, output = _video_output(latents, size, latents.dtype)
    options = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    for start in range(0, len(frames), max(frames_per_batch, 1)):
        batch = frames[start : start + frames_per_batch].float()
        output[start : start + len(batch)] = F.interpolate(batch, size=size, mode=method, **options).to(latents.dtype)
    return result


@torch.no_grad()
def upscale_with_model(
    upscaler: LatentUpscaler,
    latents: torch.Tensor,
    *,
    steps: int,
    seed: int,
    prompt: str = "",
    negative_prompt: str = "",
    guidance_scale: float = 0.0,
    frames_per_batch: int = 16,
    callback: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Latents [B, C, T, 2H, 2W] (float32, CPU) upscaled by the latent upscaler, `frames_per_batch` frames at a time.

    As in diffusers: guidance_scale above 1 guides away from `negative_prompt`; guidance_scale 0 (ContinuitySeq's
    setting) conditions on the empty prompt instead of `prompt`. `callback()` runs after every model step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if latents.shape[1] != upscaler.latent_channels:
        raise ValueError(f"the latents have {latents.shape[1]} channels but the upscaler works on {upscaler.latent_channels}")
    # [negative; positive] rows as in diffusers' CFG batch, or the positive row alone.
    texts = ([negative_prompt] if guidance_scale > 1.0 else []) + ["" if guidance_scale == 0 else prompt]
    hidden, pooled = upscaler.encode_prompt(texts)
    device = upscaler.load()

    frames = _frames(latents)
    height, width = frames.shape[-2] * MODEL_SCALE, frames.shape[-1] * MODEL_SCALE
    result, output = _video_output(latents.cpu(), (height, width), torch.float32)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    for start in range(0, len(frames), max(frames_per_batch, 1)):
        image = frames[start : start + frames_per_batch].to(device, hidden.dtype)
        count = len(image)
        noise = torch.stack([torch.randn((image.shape[1], height, width), generator=generator) for _ in range(count)])
        output[start : start + count] = _upscale_batch(
            upscaler, image, noise.to(device, hidden.dtype), hidden.repeat_interleave(count, dim=0),
            pooled.repeat_interleave(count, dim=0), steps, guidance_scale, callback,
        ).float().cpu()
    return result


def _upscale_batch(upscaler, image, noise, context, pooled, steps, guidance_scale, callback):
    """One frame batch through diffusers' latent-upscale sampling loop (Karras et al. 2022 preconditioning)."""
    from diffusers import EulerDiscreteScheduler

    uses_cfg = guidance_scale > 1.0
    scheduler = EulerDiscreteScheduler.from_config(upscaler.scheduler_config)
    scheduler.set_timesteps(steps, device=image.device)
    # The low-resolution latents, upsampled by nearest neighbour, condition every step; the pipeline's noise
    # augmentation level is 0, so they enter unscaled and the noise-level embedding is [1]*64 + [0]*64.
    image_condition = F.interpolate(torch.cat([image] * 2) if uses_cfg else image, scale_factor=MODEL_SCALE, mode="nearest")
    noise_level_embedding = torch.cat(
        [torch.ones(len(pooled), 64, dtype=pooled.dtype, device=image.device),
         torch.zeros(len(pooled), 64, dtype=pooled.dtype, device=image.device)], dim=1,
    )
    timestep_condition = torch.cat([noise_level_embedding, pooled], dim=1)
    latents = noise * scheduler.init_noise_sigma
    for index, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[index]
        model_input = torch.cat([latents] * 2) if uses_cfg else latents
        scaled_input = torch.cat([scheduler.scale_model_input(model_input, timestep), image_condition], dim=1)
        prediction = upscaler.unet(
            scaled_input, torch.log(sigma) * 0.25, encoder_hidden_states=context, timestep_cond=timestep_condition
        ).sample[:, :-1]  # the last channel is a variance the sampler does not use
        prediction = 1 / (sigma**2 + 1) * model_input + sigma / (sigma**2 + 1) ** 0.5 * prediction
        if uses_cfg:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + guidance_scale * (conditional - unconditional)
        latents = scheduler.step(prediction, timestep, latents).prev_sample
        if callback is not None:
            callback()
    return latents
