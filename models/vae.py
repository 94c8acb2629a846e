"""A per-frame image VAE (diffusers AutoencoderKL) used for 5-D video latents, batch by batch."""

from collections.abc import Iterator

import torch

from ..utils.comfy import ManagedModule


class VideoVAE:
    """Encodes IMAGE frames [T, H, W, 3] to latents [1, C, T, h, w] and decodes them back in frame batches.

    Latents are kept scaled by the VAE's scaling factor, as the UNet sees them; `scale` multiplies that factor
    (ContinuitySeq's --vae-scale).
    """

    def __init__(self, vae, scale: float = 1.0):
        self.vae = vae
        self.managed = ManagedModule(vae)
        self.scaling_factor = float(vae.config.scaling_factor) * scale
        self.latent_channels = vae.config.latent_channels
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def decode_batches(self, latents: torch.Tensor, frames_per_batch: int) -> Iterator[torch.Tensor]:
        """Yield IMAGE batches [n, H, W, 3] (float32, 0..1, CPU) for latents [B, C, T, h, w], frame by frame order.

        Only one batch of decoded frames exists at a time; videos of a batch B>1 come one after another.
        """
        device = self.managed.load()
        dtype = self.vae.dtype
        batch, _, frames = latents.shape[:3]
        for b in range(batch):
            for start in range(0, frames, frames_per_batch):
                chunk = latents[b, :, start : start + frames_per_batch].transpose(0, 1)
                pixels = self.vae.decode(chunk.to(device, dtype) / self.scaling_factor).sample
                yield (pixels.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, frames_per_batch: int) -> torch.Tensor:
        """Latents [1, C, T, h, w] (float32, CPU) of IMAGE frames [T, H, W, 3]; the posterior mean, so deterministic."""
        device = self.managed.load()
        dtype = self.vae.dtype
        latents = []
        for start in range(0, images.shape[0], frames_per_batch):
            pixels = images[start : start + frames_per_batch, ..., :3].permute(0, 3, 1, 2) * 2 - 1
            posterior = self.vae.encode(pixels.to(device, dtype)).latent_dist
            latents.append((posterior.mode() * self.scaling_factor).float().cpu())
        return torch.cat(latents).transpose(0, 1).unsqueeze(0)


class PixelVAE:
    """The "VAE" of pixel-space models: latents are the frames themselves in [-1, 1] (downscale 1).

    channels 3 is RGB, 1 greyscale (encoded as ITU-R 601 luma, as PIL's convert("L") does; decoded to grey RGB),
    4 RGBA (alpha 1 when encoding, dropped when decoding).
    """

    scaling_factor = 1.0
    downscale = 1
    LUMA = (0.299, 0.587, 0.114)

    def __init__(self, channels: int = 3):
        if channels not in (1, 3, 4):
            raise ValueError(f"a pixel-space model with {channels} channels has no image meaning: expected 1, 3 or 4")
        self.latent_channels = channels

    def decode_batches(self, latents: torch.Tensor, frames_per_batch: int) -> Iterator[torch.Tensor]:
        """Yield IMAGE batches [n, H, W, 3] (float32, 0..1, CPU), video after video, (x + 1) / 2 clamped."""
        batch, _, frames = latents.shape[:3]
        for b in range(batch):
            for start in range(0, frames, frames_per_batch):
                pixels = latents[b, :, start : start + frames_per_batch].float().cpu()
                pixels = ((pixels + 1) / 2).clamp(0, 1)
                pixels = pixels.expand(3, -1, -1, -1) if self.latent_channels == 1 else pixels[:3]
                yield pixels.permute(1, 2, 3, 0).contiguous()

    def encode(self, images: torch.Tensor, frames_per_batch: int) -> torch.Tensor:
        """Latents [1, C, T, H, W] (float32, CPU) of IMAGE frames [T, H, W, 3]: pixels * 2 - 1."""
        rgb = images[..., :3].float().cpu()
        if self.latent_channels == 1:
            pixels = (rgb * torch.tensor(self.LUMA)).sum(dim=-1, keepdim=True)
        elif self.latent_channels == 4:
            pixels = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)
        else:
            pixels = rgb
        return (pixels * 2 - 1).permute(3, 0, 1, 2).unsqueeze(0).contiguous()
