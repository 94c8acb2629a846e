"""The diffusers latent upscaler (stabilityai/sd-x2-latent-upscaler): a text-conditioned UNet2D that doubles
the height and width of image latents, loaded from a `StableDiffusionLatentUpscalePipeline` folder.

The folder holds `unet/` (UNet2DConditionModel, input = noisy latents + the low-resolution latents),
`text_encoder/` + `tokenizer/` (CLIP), `scheduler/` (EulerDiscreteScheduler) and `vae/`. Upscaling works on
latents, so the VAE is never loaded; only its config is read for the latent channel count.
"""

import os
from dataclasses import dataclass

import torch

from ..utils.comfy import ManagedModule
from .loader import ModelLoadError, _load_weights, _read_config, check_model_folder, set_attention_backend

PIPELINE_CLASS = "StableDiffusionLatentUpscalePipeline"


@dataclass
class LatentUpscaler:
    """The upscaler's UNet, CLIP text model, tokenizer and Euler scheduler config, each ready for ComfyUI's memory management."""

    unet: torch.nn.Module
    text_model: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    latent_channels: int

    def __post_init__(self):
        self.managed_unet = ManagedModule(self.unet)
        self.managed_text_model = ManagedModule(self.text_model)

    @torch.no_grad()
    def encode_prompt(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeddings [N, tokens, width], pooled embeddings [N, width]) on the compute device, in the model dtype.

        As the upscaler was trained: the last encoder layer's hidden states before CLIP's final layer norm, and the
        pooled (normed) end-of-text embedding.
        """
        device = self.managed_text_model.load()
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        output = self.text_model(tokens.input_ids.to(device), output_hidden_states=True)
        return output.hidden_states[-1], output.pooler_output

    def load(self) -> torch.device:
        return self.managed_unet.load()


def load_latent_upscaler(path: str, dtype: torch.dtype = torch.float32, attention: str = "sdpa") -> LatentUpscaler:
    """Load a latent upscaler folder (StableDiffusionLatentUpscalePipeline layout) without its VAE weights."""
    check_model_folder(path, ("unet", "text_encoder", "tokenizer", "scheduler"), "upscaler", "latent upscaler",
                       "sd-x2-latent-upscaler")
    index_file = os.path.join(path, "model_index.json")
    pipeline_class = _read_config(index_file).get("_class_name", "unknown") if os.path.exists(index_file) else PIPELINE_CLASS
    if pipeline_class != PIPELINE_CLASS:
        raise ModelLoadError(
            f"{index_file} describes a {pipeline_class}: the latent upscaler needs a "
            f"{PIPELINE_CLASS} folder such as sd-x2-latent-upscaler (text-to-video models go to LongVideoModelLoader)"
        )
    unet_config = _read_config(os.path.join(path, "unet", "config.json"))
    if unet_config.get("_class_name") != "UNet2DConditionModel":
        raise ModelLoadError(
            f"{os.path.join(path, 'unet', 'config.json')} describes a {unet_config.get('_class_name', 'unknown')}: "
            "a latent upscaler has a UNet2DConditionModel"
        )
    vae_config_file = os.path.join(path, "vae", "config.json")
    if os.path.exists(vae_config_file):
        latent_channels = int(_read_config(vae_config_file).get("latent_channels", 4))
    else:
        latent_channels = int(unet_config.get("out_channels", 5)) - 1  # the UNet also predicts a variance channel
    if unet_config.get("in_channels") != 2 * latent_channels:
        raise ModelLoadError(
            f"{os.path.join(path, 'unet', 'config.json')} takes {unet_config.get('in_channels')} input channels; a latent "
            f"upscaler for {latent_channels}-channel latents takes {2 * latent_channels} (noisy + low-resolution latents)"
        )
    scheduler_config = _read_config(os.path.join(path, "scheduler", "scheduler_config.json"))

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = _load_weights(UNet2DConditionModel, os.path.join(path, "unet"), ("diffusion_pytorch_model",), torch_dtype=dtype)
    text_model = _load_weights(CLIPTextModel, os.path.join(path, "text_encoder"), ("model", "pytorch_model"), dtype=dtype)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True)
    except Exception as error:
        raise ModelLoadError(f"could not read the tokenizer in {os.path.join(path, 'tokenizer')}: {error}") from error
    for module in (unet, text_model):
        module.eval().requires_grad_(False)
    set_attention_backend((unet,), attention)
    return LatentUpscaler(unet, text_model, tokenizer, scheduler_config, latent_channels)
