"""Loading diffusers-format text-to-video folders (ModelScope text-to-video-ms-1.7b, Zeroscope v2 layout).

A folder holds `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and `scheduler/`. Weights
are `.safetensors` (preferred) or `.bin` (read by diffusers/transformers with `weights_only=True`), plain,
sharded, or as an fp16 variant. Everything is read locally: nothing is ever downloaded.
"""

import json
import os
from dataclasses import dataclass

import torch

from ..utils.comfy import compute_device, default_dtype
from .denoiser import UNet3DDenoiser
from .text_encoder import TextEncoder
from .vae import VideoVAE

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# How spatial, text and temporal attention run: PyTorch's fused scaled-dot-product attention, or xformers'
# memory-efficient kernels (ContinuitySeq's --sdp / --xformers).
ATTENTION_BACKENDS = ("sdpa", "xformers")

# ModelScope's scheduler, used when a folder ships no scheduler/ (the UNet's training schedule).
DEFAULT_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


class ModelLoadError(ValueError):
    """A model folder or weights file that cannot be used; the message names the file and the fix."""


@dataclass
class VideoModel:
    denoiser: UNet3DDenoiser
    text_encoder: TextEncoder
    vae: VideoVAE


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return default_dtype(compute_device())
    if name not in DTYPES:
        raise ModelLoadError(f"dtype '{name}' is not supported: choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_text_to_video(path: str, dtype: torch.dtype = torch.float32, attention: str = "sdpa",
                       vae_scale: float = 1.0) -> VideoModel:
    """Load the UNet3D, VAE, CLIP text encoder, tokenizer and scheduler config of a diffusers folder.

    attention: one of ATTENTION_BACKENDS, set on the UNet and the VAE. vae_scale multiplies the VAE's scaling
    factor (ContinuitySeq's --vae-scale): latents are encoded times scaling_factor * vae_scale and decoded divided by it.
    """
    if attention not in ATTENTION_BACKENDS:
        raise ModelLoadError(f"attention '{attention}' is unknown: choose one of {', '.join(ATTENTION_BACKENDS)}")
    if not vae_scale > 0:
        raise ModelLoadError(f"vae_scale must be above 0, got {vae_scale}: 1 keeps the VAE's own scaling factor")
    if not os.path.isdir(path):
        raise ModelLoadError(f"model folder '{path}' does not exist: put a diffusers folder under models/diffusers or give its full path")
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        if not os.path.isdir(os.path.join(path, part)):
            raise ModelLoadError(
                f"model folder '{path}' has no {part}/ subfolder: a text-to-video diffusers folder needs "
                "unet/, vae/, text_encoder/ and tokenizer/ (e.g. a complete copy of zeroscope_v2_576w)"
            )

    unet_config = _read_config(os.path.join(path, "unet", "config.json"))
    if unet_config.get("_class_name") != "UNet3DConditionModel":
        raise ModelLoadError(
            f"{os.path.join(path, 'unet', 'config.json')} describes a {unet_config.get('_class_name', 'unknown')} model: "
            "LongVideoModelLoader needs a text-to-video UNet3DConditionModel (ModelScope or Zeroscope layout)"
        )
    text_config = _read_config(os.path.join(path, "text_encoder", "config.json"))
    if "CLIPTextModel" not in text_config.get("architectures", ["CLIPTextModel"]):
        raise ModelLoadError(
            f"{os.path.join(path, 'text_encoder', 'config.json')} describes {text_config['architectures']}: "
            "only CLIP text encoders (CLIPTextModel) are supported"
        )

    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = _load_weights(UNet3DConditionModel, os.path.join(path, "unet"), ("diffusion_pytorch_model",), torch_dtype=dtype)
    vae = _load_weights(AutoencoderKL, os.path.join(path, "vae"), ("diffusion_pytorch_model",), torch_dtype=dtype)
    text_model = _load_weights(CLIPTextModel, os.path.join(path, "text_encoder"), ("model", "pytorch_model"), dtype=dtype)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True)
    except Exception as error:
        raise ModelLoadError(f"could not read the tokenizer in {os.path.join(path, 'tokenizer')}: {error}") from error

    scheduler_file = os.path.join(path, "scheduler", "scheduler_config.json")
    scheduler_config = _read_config(scheduler_file) if os.path.exists(scheduler_file) else dict(DEFAULT_SCHEDULER_CONFIG)

    for module in (unet, vae, text_model):
        module.eval().requires_grad_(False)
    set_attention_backend((unet, vae), attention)
    return VideoModel(
        denoiser=UNet3DDenoiser(unet, scheduler_config),
        text_encoder=TextEncoder(tokenizer, text_model),
        vae=VideoVAE(vae, scale=vae_scale),
    )


def set_attention_backend(modules, backend: str) -> None:
    """Make every attention layer of the diffusers `modules` run on `backend` (one of ATTENTION_BACKENDS)."""
    if backend == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        for module in modules:
            module.set_attn_processor(AttnProcessor2_0())
        return
    if backend != "xformers":
        raise ModelLoadError(f"attention '{backend}' is unknown: choose one of {', '.join(ATTENTION_BACKENDS)}")
    from diffusers.utils import is_xformers_available

    if not is_xformers_available():
        raise ModelLoadError(
            "attention 'xformers' needs the xformers package, which is not installed: install the xformers build "
            "that matches your torch (pip install xformers), or choose attention 'sdpa' (as fast on torch 2)"
        )
    if not torch.cuda.is_available():
        raise ModelLoadError("attention 'xformers' runs on NVIDIA GPUs only and no CUDA device is available: choose 'sdpa'")
    for module in modules:
        try:
            module.enable_xformers_memory_efficient_attention()
        except Exception as error:
            raise ModelLoadError(f"xformers could not run on this system ({error}): choose attention 'sdpa'") from error


def _read_config(file: str) -> dict:
    try:
        with open(file, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ModelLoadError(f"{file} is missing: the model folder is incomplete, copy it again") from None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{file} is not valid JSON ({error}): the model folder is damaged, copy it again") from error


def _find_weights(folder: str, stems: tuple[str, ...]) -> tuple[list[str], str | None, bool]:
    """The weights files of a component folder: (files, variant, is_safetensors)."""
    for extension in (".safetensors", ".bin"):
        for stem in stems:
            for variant in (None, "fp16", "bf16"):
                name = stem + (f".{variant}" if variant else "") + extension
                if os.path.exists(os.path.join(folder, name)):
                    return [os.path.join(folder, name)], variant, extension == ".safetensors"
                index = os.path.join(folder, name + ".index.json")
                if os.path.exists(index):
                    shards = sorted(set(_read_config(index).get("weight_map", {}).values()))
                    return [os.path.join(folder, shard) for shard in shards], variant, extension == ".safetensors"
    raise ModelLoadError(
        f"{folder} holds no weights: expected {stems[0]}.safetensors (or .bin, or an fp16 variant) beside its config.json"
    )


def check_safetensors(file: str) -> None:
    """Raise ModelLoadError naming `file` when it is missing, truncated or not a safetensors file."""
    from safetensors import safe_open

    if not os.path.exists(file):
        raise ModelLoadError(f"weights file {file} is missing: the model folder is incomplete, copy it again")
    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except Exception as error:
        raise ModelLoadError(f"weights file {file} is corrupt or truncated ({error}): download or copy it again") from error


def _load_weights(model_class, folder: str, stems: tuple[str, ...], **dtype_argument):
    files, variant, is_safetensors = _find_weights(folder, stems)
    if is_safetensors:
        for file in files:
            check_safetensors(file)
    try:
        return model_class.from_pretrained(
            folder, variant=variant, use_safetensors=is_safetensors, local_files_only=True, **dtype_argument
        )
    except Exception as error:
        raise ModelLoadError(f"could not load {model_class.__name__} from {', '.join(files)}: {error}") from error
