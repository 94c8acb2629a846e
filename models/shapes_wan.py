"""The pack's Wan-class shapes model behind ComfyUI's own interfaces: its text encoder as a CLIP, its VAE as a VAE.

The transformers (checkpoints/longvideo-shapes-wan/shapes_wan_*.safetensors) are ComfyUI's own WanModel class and load
with Load Diffusion Model like any Wan 2.1 file. Their text encoder and VAE are the pack's own small networks, which
ComfyUI's CLIP and VAE loaders cannot build, so this module gives them the interfaces ComfyUI's nodes call:

- `ShapesText` is a CLIP for CLIPTextEncode (tokenize, encode_from_tokens_scheduled): the embedded model's CLIP text
  encoder (checkpoints/longvideo-shapes) on the first TEXT_TOKENS positions, zero-padded to the 4096 channels every
  Wan 2.1 that ComfyUI builds reads (its model detection does not read the text width).
- `ShapesWanVAE` is a VAE for VAEDecode, VAEEncode, WanImageToVideo, WanFirstLastFrameToVideo, ...: the causal VAE of
  models/causal_vae.py. ComfyUI normalises Wan latents with the Wan 2.1 VAE's own channel statistics (its latent
  format's process_in); this VAE's latents have other statistics, so `encode` hands out its latents standardised with
  its own statistics and then carried into Wan's (`x * wan_std + wan_mean`), which ComfyUI's process_in takes back to
  the standardised latents the transformer was trained on. `decode` inverts that.

No ComfyUI import here: ComfyUI's model loading and its Wan 2.1 latent statistics come through utils/comfy.py, and
ShapesWanVAE takes the statistics as arguments (the training tool gives it 0 and 1 to get the standardised latents).
"""

import math
import os

import torch

from ..utils.comfy import PACK_CHECKPOINTS_FOLDER, ManagedModule, load_comfy_diffusion_model, wan21_latent_statistics
from .causal_vae import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, CausalVideoVAE
from .loader import ModelLoadError, load_text_encoder
from .text_encoder import TextEncoder

SHAPES_WAN_FOLDER = os.path.join(PACK_CHECKPOINTS_FOLDER, "longvideo-shapes-wan")
TEXT_ENCODER_FOLDER = os.path.join(PACK_CHECKPOINTS_FOLDER, "longvideo-shapes")  # the embedded model's CLIP
VAE_FILE = "vae.safetensors"
TRANSFORMER_FILES = {"image-to-video": "shapes_wan_i2v.safetensors", "text-to-video": "shapes_wan_t2v.safetensors"}

TEXT_TOKENS = 16   # token positions kept: every shapes prompt fits (BOS, five words, EOS); CLIP is causal, so they
                   # are the same as in a 77-token run
TEXT_WIDTH = 4096  # the text width of every Wan 2.1 ComfyUI builds


class ShapesText:
    """ComfyUI's CLIP interface around the embedded CLIP text encoder, giving Wan-shaped text conditioning."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder

    def encode(self, texts: list[str]) -> torch.Tensor:
        """[N, TEXT_TOKENS, TEXT_WIDTH] float32 on the CPU."""
        tokens, _ = self.encoder.encode(texts)
        tokens = tokens[:, :TEXT_TOKENS]
        return torch.nn.functional.pad(tokens, (0, TEXT_WIDTH - tokens.shape[-1]))

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        return {"longvideo_shapes": text}

    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False, return_dict: bool = False):
        cond = self.encode([self._text(tokens)])
        if return_dict:
            return {"cond": cond, "pooled_output": None}
        return (cond, None) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: dict, unprojected: bool = False, add_dict: dict | None = None,
                                     show_pbar: bool = True) -> list:
        return [[self.encode([self._text(tokens)]), dict(add_dict or {})]]

    @staticmethod
    def _text(tokens) -> str:
        if not isinstance(tokens, dict) or "longvideo_shapes" not in tokens:
            raise ValueError("these tokens come from another text encoder: tokenize with the LongVideo shapes text encoder")
        return tokens["longvideo_shapes"]


class ShapesWanVAE:
    """ComfyUI's VAE interface (encode, decode, latent_channels, the compression the comfy_extras nodes read) around the
    pack's causal video VAE, its latents carried into the Wan 2.1 latent statistics ComfyUI normalises with."""

    latent_dim = 3
    output_channels = 3

    def __init__(self, vae: CausalVideoVAE, wan_mean: torch.Tensor, wan_std: torch.Tensor):
        config = vae.config
        if config.latents_mean is None or config.latents_std is None:
            raise ValueError("this causal VAE file holds no latent statistics (latents_mean / latents_std): retrain it "
                             "with tools/train_causal_vae.py, which writes them")
        self.vae = vae.eval().requires_grad_(False)
        self.managed = ManagedModule(self.vae)
        channels = vae.latent_channels
        self.latent_channels = channels
        self.own_mean = torch.tensor(config.latents_mean).view(1, channels, 1, 1, 1)
        self.own_std = torch.tensor(config.latents_std).view(1, channels, 1, 1, 1)
        self.wan_mean = wan_mean.float().reshape(1, channels, 1, 1, 1)
        self.wan_std = wan_std.float().reshape(1, channels, 1, 1, 1)
        t, s = TEMPORAL_COMPRESSION, SPATIAL_COMPRESSION
        self.downscale_ratio = (lambda a: max(0, math.floor((a + t - 1) / t)), s, s)
        self.upscale_ratio = (lambda a: max(0, a * t - t + 1), s, s)
        self.downscale_index_formula = (t, s, s)
        self.upscale_index_formula = (t, s, s)

    def spacial_compression_encode(self) -> int:
        return SPATIAL_COMPRESSION

    def spacial_compression_decode(self) -> int:
        return SPATIAL_COMPRESSION

    def temporal_compression_decode(self) -> int:
        return TEMPORAL_COMPRESSION

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's own latents -> unit-statistics latents (what the transformer sees)."""
        return (latents - self.own_mean) / self.own_std

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE frames [T, H, W, C] in 0..1 -> latents [1, 16, (T - 1) / 4 + 1, H / 8, W / 8] in Wan 2.1's raw space."""
        if pixels.dim() != 4:
            raise ValueError(f"pixels of shape {tuple(pixels.shape)}: expected IMAGE frames [frames, height, width, 3]")
        frames = len(pixels)
        if (frames - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"{frames} frames: this VAE takes 4 x n + 1 frames (1, 5, 9, 13, 17, ...)")
        device = self.managed.load()
        video = pixels[..., :3].movedim(-1, 0).unsqueeze(0).float().to(device) * 2 - 1  # [1, 3, T, H, W]
        with torch.no_grad():
            latents = self.vae.encode(video).float().cpu()
        return self.standardise(latents) * self.wan_std + self.wan_mean

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, 16, t, h, w] in Wan 2.1's raw space -> IMAGE frames [B, 4 (t - 1) + 1, 8 h, 8 w, 3] in 0..1."""
        if latents.dim() != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents of shape {tuple(latents.shape)}: expected [batch, {self.latent_channels}, frames, "
                             "height, width]")
        own = ((latents.float().cpu() - self.wan_mean) / self.wan_std) * self.own_std + self.own_mean
        device = self.managed.load()
        with torch.no_grad():
            video = self.vae.decode(own.to(device)).float().cpu()
        return ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)

    def encode_tiled(self, pixels: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.encode(pixels)

    def decode_tiled(self, latents: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.decode(latents)


def shapes_wan_file(name: str, folder: str = SHAPES_WAN_FOLDER) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        command = ("python tools/train_causal_vae.py" if name == VAE_FILE
                   else "COMFYUI_PATH=../shared/comfyui python tools/train_wan_shapes.py")
        raise ModelLoadError(f"{path} is missing: the pack ships it; rebuild it with {command}")
    return path


def load_shapes_wan_transformer(variant: str, folder: str = SHAPES_WAN_FOLDER):
    """The ComfyUI MODEL of one transformer file (`variant`: a TRANSFORMER_FILES key), what Load Diffusion Model makes of
    it. Needs ComfyUI loaded."""
    if variant not in TRANSFORMER_FILES:
        raise ModelLoadError(f"variant '{variant}' is unknown: choose one of {', '.join(TRANSFORMER_FILES)}")
    return load_comfy_diffusion_model(shapes_wan_file(TRANSFORMER_FILES[variant], folder))


def load_shapes_wan_text_and_vae(folder: str = SHAPES_WAN_FOLDER) -> tuple[ShapesText, ShapesWanVAE]:
    """The text encoder and VAE both transformer files share, behind ComfyUI's CLIP and VAE interfaces."""
    vae = ShapesWanVAE(CausalVideoVAE.load(shapes_wan_file(VAE_FILE, folder)), *wan21_latent_statistics())
    return ShapesText(load_text_encoder(TEXT_ENCODER_FOLDER)), vae


def load_shapes_wan(variant: str, folder: str = SHAPES_WAN_FOLDER):
    """(ComfyUI MODEL, ShapesText, ShapesWanVAE) of the shapes Wan model, as LongVideoShapesWanLoader gives them."""
    model = load_shapes_wan_transformer(variant, folder)
    return (model, *load_shapes_wan_text_and_vae(folder))
