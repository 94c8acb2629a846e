"""Loading diffusers-format text-to-video folders (ModelScope text-to-video-ms-1.7b, Zeroscope v2 layout).

A folder holds `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and `scheduler/`. Weights
are `.safetensors` (preferred) or `.bin` (read with `weights_only=True`), plain, sharded, or as an fp16
variant. Everything is read locally: nothing is ever downloaded.

The UNet's architecture is told by its weight keys and channels, not its config's class name:
- ContinuitySeq checkpoints (b-f/ContinuitySeq-A) name diffusers' UNet3DConditionModel in unet/config.json but have
  a second, conditioning stream (`conv_in.conditioning_conv.weight`); they load strictly into models/continuityseq.py.
- A UNet with in_channels = 2 * out_channels + 1 takes known frames through extra input channels ([noisy, mask, known],
  the inpainting order), for frame conditioning 'learned'. `known_frames_input` in unet/config.json names the layout
  (models/hint_unet.py): "mask" (the embedded model: mask of known frames + their latents, any pattern, text to video
  without) loads as a MaskUNet3DDenoiser; absent or "hint" (lxj616's interpolation UNet: zero mask, hint = last
  known frame) as a HintUNet3DDenoiser.
"""

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import inspect

import torch

from ..utils.comfy import compute_device, default_dtype
from .denoiser import Denoiser, UNet3DDenoiser
from .hint_unet import KNOWN_FRAMES_INPUT_KEY, MASK_LAYOUT, HintUNet3DDenoiser, MaskUNet3DDenoiser, is_hint_unet, known_frames_layout
from .text_encoder import TextEncoder
from .vae import VideoVAE

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# How spatial, text and temporal attention run: PyTorch's fused scaled-dot-product attention, or xformers'
# memory-efficient kernels (ContinuitySeq's --sdp / --xformers).
ATTENTION_BACKENDS = ("sdpa", "xformers")

CONTINUITYSEQ_KEY = "conv_in.conditioning_conv.weight"
CONDITIONING_BLOCK_KEY = ".conditioning_block."

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
    denoiser: Denoiser
    text_encoder: TextEncoder
    vae: VideoVAE


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return default_dtype(compute_device())
    if name not in DTYPES:
        raise ModelLoadError(f"dtype '{name}' is not supported: choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_text_to_video(path: str, dtype: torch.dtype = torch.float32, *, corrected_padding_mask: bool = False,
                       attention: str = "sdpa", vae_scale: float = 1.0) -> VideoModel:
    """Load the UNet3D, VAE, CLIP text encoder, tokenizer and scheduler config of a diffusers folder.

    A ContinuitySeq UNet becomes a ContinuitySeqDenoiser (frame conditioning 'learned'); `corrected_padding_mask`
    applies to it only (False reproduces the checkpoint's inverted padding mask, see models/continuityseq.py).
    attention: one of ATTENTION_BACKENDS, set on the UNet and the VAE. vae_scale multiplies the VAE's scaling
    factor (ContinuitySeq's --vae-scale): latents are encoded times scaling_factor * vae_scale and decoded divided by it.
    """
    if attention not in ATTENTION_BACKENDS:
        raise ModelLoadError(f"attention '{attention}' is unknown: choose one of {', '.join(ATTENTION_BACKENDS)}")
    if not vae_scale > 0:
        raise ModelLoadError(f"vae_scale must be above 0, got {vae_scale}: 1 keeps the VAE's own scaling factor")
    check_model_folder(path, ("unet", "vae", "text_encoder", "tokenizer"), "model", "text-to-video diffusers",
                       "zeroscope_v2_576w")

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

    unet_folder = os.path.join(path, "unet")
    unet_files, _, unet_safetensors = _find_weights(unet_folder, ("diffusion_pytorch_model",))
    continuityseq = CONTINUITYSEQ_KEY in _weight_keys(unet_files, unet_safetensors)
    if not continuityseq and unet_config.get("in_channels", 4) != unet_config.get("out_channels", 4) and not is_hint_unet(unet_config):
        raise ModelLoadError(
            f"{os.path.join(path, 'unet', 'config.json')} has in_channels {unet_config.get('in_channels')} and out_channels "
            f"{unet_config.get('out_channels')}: supported are plain models (equal) and models that take known frames "
            "(in_channels = 2 * out_channels + 1: noisy latents, mask, known latents)"
        )
    try:
        layout = known_frames_layout(unet_config) if not continuityseq and is_hint_unet(unet_config) else None
    except ValueError as error:
        raise ModelLoadError(f"{os.path.join(path, 'unet', 'config.json')}: {error}") from error
    if continuityseq:
        unet = _load_continuityseq(unet_folder, unet_config, unet_files, unet_safetensors, dtype)
    else:
        with _quiet_about(KNOWN_FRAMES_INPUT_KEY):
            unet = _load_weights(UNet3DConditionModel, unet_folder, ("diffusion_pytorch_model",), torch_dtype=dtype)
    vae = _load_weights(AutoencoderKL, os.path.join(path, "vae"), ("diffusion_pytorch_model",), torch_dtype=dtype)
    text_encoder = load_text_encoder(path, dtype)

    scheduler_file = os.path.join(path, "scheduler", "scheduler_config.json")
    scheduler_config = _read_config(scheduler_file) if os.path.exists(scheduler_file) else dict(DEFAULT_SCHEDULER_CONFIG)

    for module in (unet, vae, text_encoder.text_model):
        module.eval().requires_grad_(False)
    set_attention_backend((unet, vae), attention)
    if continuityseq:
        from .continuityseq import ContinuitySeqDenoiser

        denoiser = ContinuitySeqDenoiser(unet, scheduler_config, corrected_padding_mask)
    elif layout == MASK_LAYOUT:
        denoiser = MaskUNet3DDenoiser(unet, scheduler_config)
    elif layout:
        denoiser = HintUNet3DDenoiser(unet, scheduler_config)
    else:
        denoiser = UNet3DDenoiser(unet, scheduler_config)
    return VideoModel(
        denoiser=denoiser,
        text_encoder=text_encoder,
        vae=VideoVAE(vae, scale=vae_scale),
    )


@contextmanager
def _quiet_about(config_key: str):
    """diffusers warns that a config key it does not know is ignored; the pack's own keys are read by the pack."""
    def keep(record: logging.LogRecord) -> bool:
        return config_key not in record.getMessage()

    config_logger = logging.getLogger("diffusers.configuration_utils")
    config_logger.addFilter(keep)
    try:
        yield
    finally:
        config_logger.removeFilter(keep)


def check_model_folder(path: str, parts: tuple[str, ...], name: str, kind: str, example: str) -> None:
    """Raise a ModelLoadError saying what to fix when `path` is not a folder holding every one of `parts`."""
    if not os.path.isdir(path):
        raise ModelLoadError(f"{name} folder '{path}' does not exist: put a {kind} folder under models/diffusers or give its full path")
    needed = ", ".join(f"{part}/" for part in parts[:-1]) + f" and {parts[-1]}/"
    for part in parts:
        if not os.path.isdir(os.path.join(path, part)):
            raise ModelLoadError(f"{name} folder '{path}' has no {part}/ subfolder: a {kind} folder needs {needed} "
                                 f"(e.g. a complete copy of {example})")


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
            config = json.load(handle)
        if not isinstance(config, dict):
            raise ValueError(f"it holds a JSON {type(config).__name__}, not an object")
        return config
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


def load_text_encoder(path: str, dtype: torch.dtype = torch.float32) -> TextEncoder:
    """The CLIP tokenizer and text model of a diffusers folder (its tokenizer/ and text_encoder/), frozen."""
    from transformers import CLIPTextModel, CLIPTokenizer

    text_model = _load_weights(CLIPTextModel, os.path.join(path, "text_encoder"), ("model", "pytorch_model"), dtype=dtype)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True)
    except Exception as error:
        raise ModelLoadError(f"could not read the tokenizer in {os.path.join(path, 'tokenizer')}: {error}") from error
    text_model.eval().requires_grad_(False)
    return TextEncoder(tokenizer, text_model)


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


def _weight_keys(files: list[str], is_safetensors: bool) -> set[str]:
    """The tensor names in weights files, read without loading the tensors where the format allows."""
    keys = set()
    for file in files:
        if is_safetensors:
            from safetensors import safe_open

            check_safetensors(file)
            with safe_open(file, framework="pt") as handle:
                keys.update(handle.keys())
        else:
            keys.update(_torch_load(file, mmap=True))
    return keys


def _torch_load(file: str, mmap: bool = False) -> dict:
    """A .bin state dict, tensors only (weights_only=True); memory-mapped when asked and the file allows it."""
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            return torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped
    except Exception as error:
        raise ModelLoadError(f"weights file {file} cannot be read as a plain tensor state dict ({error}): "
                             "copy it again, or convert it to .safetensors") from error


def _read_state_dict(files: list[str], is_safetensors: bool) -> dict[str, torch.Tensor]:
    state = {}
    for file in files:
        if is_safetensors:
            from safetensors.torch import load_file

            state.update(load_file(file))
        else:
            state.update(_torch_load(file, mmap=True))
    return state


def _load_continuityseq(folder: str, config: dict, files: list[str], is_safetensors: bool, dtype: torch.dtype):
    """The two-stream ContinuitySeq UNet, loaded strictly: every key present, none unexpected, every shape right."""
    from .continuityseq import ContinuitySeqUNet

    config_file = os.path.join(folder, "config.json")
    state = _read_state_dict(files, is_safetensors)
    has_blocks = any(CONDITIONING_BLOCK_KEY in key for key in state)
    use_norm = bool(config.get("use_conditioning_norm", True))  # the original's default when the config omits it
    if use_norm != has_blocks:
        raise ModelLoadError(
            f"{config_file} says use_conditioning_norm={str(use_norm).lower()}"
            f"{'' if 'use_conditioning_norm' in config else ' (by default, it is not set)'} but the weights "
            f"{'have no' if use_norm else 'have'} conditioning_block tensors: set \"use_conditioning_norm\": "
            f"{str(has_blocks).lower()} in that config.json"
        )
    parameters = set(inspect.signature(ContinuitySeqUNet.__init__).parameters) - {"self"}
    arguments = {name: value for name, value in config.items() if name in parameters}
    arguments["use_conditioning_norm"] = use_norm
    try:
        with torch.device("meta"):
            unet = ContinuitySeqUNet(**arguments)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"{config_file} does not describe a ContinuitySeq UNet: {error}") from error

    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(key for key in set(expected) & set(state) if state[key].shape != expected[key].shape)
    if missing or unexpected or misshapen:
        problems = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
                    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("keys whose shape differs from config.json", misshapen)) if keys]
        raise ModelLoadError(
            f"the ContinuitySeq UNet weights in {', '.join(files)} do not match {config_file}: {'; '.join(problems)}. "
            "The folder is damaged or mixes two models: copy it again"
        )
    state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    unet.load_state_dict(state, strict=True, assign=True)
    return unet
