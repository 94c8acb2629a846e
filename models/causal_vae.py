"""A small causal video VAE with Wan 2.1's latent layout, the pack's own network (plain torch, no ComfyUI).

Wan 2.1's layout: 16 latent channels, 8x spatial and 4x temporal compression with a causal first frame. Pixel frame 0
is encoded alone into latent frame 0 and every later latent frame holds 4 pixel frames, so a video of 4k + 1 pixel
frames has k + 1 latent frames; decoding gives back 1 pixel frame for latent frame 0 and 4 for each later one.

    vae = CausalVideoVAE.load("checkpoints/longvideo-shapes-wan/vae.safetensors")
    latents = vae.encode(pixels)      # pixels [B, 3, 4k + 1, H, W] in -1..1 -> latents [B, 16, k + 1, H / 8, W / 8]
    pixels = vae.decode(latents)      # and back (not clamped)

The network, per stage (frames folded into the batch where a stage is per frame):
- encoder: 2x2 patches (pixel unshuffle) -> per-frame 2D convolutions down to H / 8 -> causal 3D residual blocks and
  two causal 2x temporal downsamplers at H / 8 -> 16 channels;
- decoder: the mirror image, two causal 2x temporal upsamplers at H / 8, then per-frame 2D convolutions up to H / 2 and
  2x2 patches back to pixels.
Every temporal convolution pads only on the past side and there are no normalisation layers (a group norm would mix
frames; with a per-position channel norm the training loss sat on the all-grey plateau until about step 175, without
norms it left it by step 50), so no output depends on a later frame: encoding a video's first 4k + 1 frames gives the
first k + 1 latent frames of the whole video, and decoding a latent prefix gives the pixel prefix (to float rounding).

The bottleneck is deterministic (the encoder's output is the latent; no sampling, no KL term). The per-channel mean and
standard deviation of the latents over the training clips are kept in the config (`latents_mean`, `latents_std`,
as Wan's latent format has them) for a model that wants unit-variance latents; `encode` and `decode` do not apply them.

Weights are one safetensors file whose metadata holds the format name and the config as JSON; nothing is unpickled.
"""

import json
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .loader import ModelLoadError, check_safetensors

FORMAT = "longvideo-causal-video-vae"
TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


@dataclass(frozen=True)
class CausalVAEConfig:
    latent_channels: int = 16
    patch: int = 2               # pixel unshuffle at the input (and shuffle at the output): the first stage is H / patch
    width: int = 32              # channels of the H / 2 stage
    mid_width: int = 64          # channels of the H / 4 and H / 8 stages
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CausalVAEConfig":
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"causal VAE config has unknown fields {unknown}")
        for name in ("latents_mean", "latents_std"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


class CausalConv3d(nn.Conv3d):
    """A 3D convolution that pads kernel_t - 1 zero frames before the first frame and none after the last."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (3, 3, 3)):
        super().__init__(in_channels, out_channels, kernel, padding=0)
        kernel_t, kernel_h, kernel_w = kernel
        self.causal_padding = (kernel_w // 2, kernel_w // 2, kernel_h // 2, kernel_h // 2, kernel_t - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.causal_padding))


def zero_init(conv: nn.Module) -> nn.Module:
    """A residual branch's last convolution starts at zero, so that every block starts as the identity."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock2d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.SiLU(), zero_init(nn.Conv2d(channels, channels, 3, padding=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class CausalResidualBlock3d(nn.Module):
    """A causal 3x3x3 convolution then a per-frame 3x3 one (a second 3x3x3 cost 73k more parameters a block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(nn.SiLU(), CausalConv3d(channels, channels),
                                    nn.SiLU(), zero_init(CausalConv3d(channels, channels, (1, 3, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class CausalTemporalDownsample(nn.Module):
    """1 + 2m frames -> 1 + m: output frame 0 from input frame 0 alone, output frame j > 0 from frames 2j - 1 and 2j
    (one zero frame before frame 0 makes the pairs line up)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (2, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 0, 0, 0, 1, 0)))


class CausalTemporalUpsample(nn.Module):
    """1 + m frames -> 1 + 2m: each frame becomes two (from it and the frame before), and frame 0's first copy is
    dropped, so that frame 0 stays one frame (the inverse of CausalTemporalDownsample's pairing)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels, (2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        pairs = self.conv(x).view(batch, 2, channels, frames, height, width)
        doubled = pairs.permute(0, 2, 3, 1, 4, 5).reshape(batch, channels, 2 * frames, height, width)
        return doubled[:, :, 1:]


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B * T, C, H, W]"""
    batch, channels, frames, height, width = x.shape
    return x.transpose(1, 2).reshape(batch * frames, channels, height, width)


def batch_to_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * T, C, H, W] -> [B, C, T, H, W]"""
    channels, height, width = x.shape[1:]
    return x.view(batch, -1, channels, height, width).transpose(1, 2)


class Upsample2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CausalEncoder(nn.Module):
    def __init__(self, config: CausalVAEConfig):
        super().__init__()
        width, mid = config.width, config.mid_width
        self.patch = config.patch
        self.per_frame = nn.Sequential(
            nn.Conv2d(3 * config.patch ** 2, width, 3, padding=1), ResidualBlock2d(width),       # H / 2
            nn.Conv2d(width, mid, 3, stride=2, padding=1), ResidualBlock2d(mid),                   # H / 4
            nn.Conv2d(mid, mid, 3, stride=2, padding=1),                                           # H / 8
        )
        self.temporal = nn.Sequential(
            CausalTemporalDownsample(mid), CausalResidualBlock3d(mid),
            CausalTemporalDownsample(mid), CausalResidualBlock3d(mid),
            nn.SiLU(), CausalConv3d(mid, config.latent_channels),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.per_frame(F.pixel_unshuffle(frames_to_batch(pixels), self.patch))
        return self.temporal(batch_to_frames(features, pixels.shape[0]))


class CausalDecoder(nn.Module):
    def __init__(self, config: CausalVAEConfig):
        super().__init__()
        width, mid = config.width, config.mid_width
        self.patch = config.patch
        self.temporal = nn.Sequential(
            CausalConv3d(config.latent_channels, mid), CausalResidualBlock3d(mid),
            CausalTemporalUpsample(mid), CausalResidualBlock3d(mid),
            CausalTemporalUpsample(mid),
        )
        self.per_frame = nn.Sequential(
            Upsample2d(mid, mid), ResidualBlock2d(mid),                                             # H / 4
            Upsample2d(mid, width), ResidualBlock2d(width),                                         # H / 2
            nn.SiLU(), nn.Conv2d(width, 3 * config.patch ** 2, 3, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        features = frames_to_batch(self.temporal(latents))
        return batch_to_frames(F.pixel_shuffle(self.per_frame(features), self.patch), latents.shape[0])


class CausalVideoVAE(nn.Module):
    """Pixels [B, 3, 4k + 1, H, W] in -1..1 <-> latents [B, 16, k + 1, H / 8, W / 8]; H and W multiples of 8."""

    def __init__(self, config: CausalVAEConfig | None = None):
        super().__init__()
        self.config = config or CausalVAEConfig()
        self.encoder = CausalEncoder(self.config)
        self.decoder = CausalDecoder(self.config)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @staticmethod
    def latent_frames(pixel_frames: int) -> int:
        if pixel_frames < 1 or (pixel_frames - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"{pixel_frames} pixel frames: a causal video VAE with {TEMPORAL_COMPRESSION}x temporal "
                             f"compression takes {TEMPORAL_COMPRESSION}k + 1 frames (1, 5, 9, 13, 17, ...)")
        return (pixel_frames - 1) // TEMPORAL_COMPRESSION + 1

    @staticmethod
    def pixel_frames(latent_frames: int) -> int:
        if latent_frames < 1:
            raise ValueError(f"{latent_frames} latent frames: need at least 1")
        return TEMPORAL_COMPRESSION * (latent_frames - 1) + 1

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels of shape {tuple(pixels.shape)}: expected [batch, 3, frames, height, width]")
        self.latent_frames(pixels.shape[2])
        height, width = pixels.shape[-2:]
        if height % SPATIAL_COMPRESSION or width % SPATIAL_COMPRESSION:
            raise ValueError(f"{height}x{width} pixels: height and width must be multiples of {SPATIAL_COMPRESSION}")
        return self.encoder(pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents of shape {tuple(latents.shape)}: expected [batch, {self.latent_channels}, frames, "
                             "height, width]")
        return self.decoder(latents)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixels))

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(tensors, path + ".tmp", metadata={"format": FORMAT, "config": self.config.to_json()})
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str) -> "CausalVideoVAE":
        from safetensors import safe_open
        from safetensors.torch import load_file

        check_safetensors(path)
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ModelLoadError(f"{path} is not a {FORMAT} file (its metadata names format {metadata.get('format')!r})")
        model = cls(CausalVAEConfig.from_json(metadata["config"]))
        model.load_state_dict(load_file(path))
        return model.eval()
