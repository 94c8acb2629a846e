import json
import os
from types import SimpleNamespace

from ..models.latent_upscaler import PIPELINE_CLASS, load_latent_upscaler
from ..models.loader import ATTENTION_BACKENDS, DTYPES, resolve_dtype
from ..sampling.latent_upscale import INTERPOLATION_METHODS, MODEL_SCALE, interpolate_latents, upscale_with_model
from ..utils.comfy import Progress, find_model_folder, intermediate_device, list_model_folders
from .common import (
    LATENT, LATENT_DOWNSCALE, LOADERS, NOTHING_FOUND, VAE, NodeInputError, check_frame_size, check_numbers,
    latent_downscale, validate_model_choice, video_latents,
)
from .sampler import SEED

LATENT_UPSCALER = "LV_LATENT_UPSCALER"
# Latent channels of ComfyUI's video VAEs that compress more than 8x (Wan 2.2 TI2V 5B, LTX-Video): pixel sizes need
# the VAE to be turned into latent sizes.
COARSER_LATENT_CHANNELS = {48: 16, 128: 32}
METHODS = (*INTERPOLATION_METHODS, "model")
NO_MODEL_FOUND = NOTHING_FOUND


def list_latent_upscalers() -> list[str]:
    """The model folders that are latent upscalers: a StableDiffusionLatentUpscalePipeline model_index.json (or
    none) and a UNet2DConditionModel unet, so text-to-video folders such as longvideo-shapes are left out."""
    names = []
    for name in list_model_folders():
        folder = find_model_folder(name)
        try:
            index = _json(os.path.join(folder, "model_index.json"))
            unet = _json(os.path.join(folder, "unet", "config.json"))
        except (OSError, ValueError):
            continue
        if index.get("_class_name", PIPELINE_CLASS) == PIPELINE_CLASS and unet.get("_class_name") == "UNet2DConditionModel":
            names.append(name)
    return names


def _json(path: str) -> dict:
    """The JSON object in `path`; {} when the file does not exist."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle)
    return value if isinstance(value, dict) else {}


class LongVideoLatentUpscaleModelLoader:
    DESCRIPTION = (
        "Loads a diffusers latent upscaler folder (StableDiffusionLatentUpscalePipeline layout, e.g. "
        "stabilityai/sd-x2-latent-upscaler) for LongVideoLatentUpscale's 'model' method: its UNet, CLIP text "
        "encoder and scheduler (its VAE is not needed). Folders are listed from models/diffusers and models/longvideo."
    )
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (LATENT_UPSCALER,)
    RETURN_NAMES = ("upscale_model",)
    OUTPUT_TOOLTIPS = ("The latent upscaler, for LongVideoLatentUpscale.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (list_latent_upscalers() or [NO_MODEL_FOUND],
                          {"tooltip": "A latent upscaler folder found under models/diffusers or models/longvideo (other "
                                      "model folders are not listed). none: no upscaler was found: type a path in model_path."}),
                "dtype": (["auto", *DTYPES], {"default": "auto", "tooltip": "Weights precision. auto: fp16 on NVIDIA GPUs, fp32 on the CPU."}),
            },
            "optional": {
                "model_path": ("STRING", {"default": "", "tooltip": "A full path to the folder; when set it is used instead of 'model'."}),
                "attention": (list(ATTENTION_BACKENDS), {"default": "sdpa", "tooltip": "sdpa (PyTorch's fused attention) or xformers."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model, model_path=None):
        return validate_model_choice("LongVideoLatentUpscaleModelLoader", model, model_path, find_model_folder,
                                     "models/diffusers or models/longvideo", "model_path")

    def load(self, model, dtype, model_path="", attention="sdpa"):
        node = "LongVideoLatentUpscaleModelLoader"
        name = model_path.strip() or model
        folder = None if name == NO_MODEL_FOUND else find_model_folder(name)
        if folder is None:
            raise NodeInputError(
                f"{node}: upscaler folder '{name}' was not found: put sd-x2-latent-upscaler (a complete diffusers copy) "
                "under models/diffusers, or type its full path in model_path"
            )
        return (load_latent_upscaler(folder, resolve_dtype(dtype), attention),)


class LongVideoLatentUpscale:
    DESCRIPTION = (
        "Upscales every frame of a video latent: by interpolation (nearest, bilinear, bicubic, area) to scale_by or "
        "to width x height, or 2x with a latent upscaler model (method 'model', text-conditioned as ContinuitySeq's "
        "--upscale does it), frame batch by frame batch. Follow it with LongVideoSampler at denoise 0.4-0.6 to refine "
        "(LongVideoContextWindows keeps long videos within memory)."
    )
    CATEGORY = LATENT
    FUNCTION = "upscale"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The upscaled video latent; refine it with LongVideoSampler at denoise about 0.5.",)

    @classmethod
    def INPUT_TYPES(cls):
        def target(name):
            return ("INT", {"default": 0, "min": 0, "max": 8192, "step": LATENT_DOWNSCALE,
                            "tooltip": f"Target frame {name} in pixels (a multiple of {LATENT_DOWNSCALE}, or of the VAE's "
                                       "compression with vae connected); 0 follows scale_by or, when only the other side "
                                       "is set, keeps the aspect ratio."})

        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The video latent [batch, channels, frames, height, width] to upscale."}),
                "method": (list(METHODS), {"default": "bilinear",
                                           "tooltip": "Interpolation per frame, or 'model': the connected latent upscaler (2x only)."}),
                "scale_by": ("FLOAT", {"default": 2.0, "min": 0.125, "max": 8.0, "step": 0.125,
                                       "tooltip": "Factor for height and width; ignored when width or height is set."}),
                "width": target("width"),
                "height": target("height"),
                "frames_per_batch": ("INT", {"default": 16, "min": 1, "max": 4096,
                                             "tooltip": "Frames upscaled at once; with the model this bounds its memory. "
                                                        "The result does not depend on it."}),
            },
            "optional": {
                "upscale_model": (LATENT_UPSCALER, {"tooltip": "Method 'model' only (ignored by the interpolation methods): from LongVideoLatentUpscaleModelLoader."}),
                "prompt": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "Method 'model' only (ignored by the interpolation methods): the text the upscaler is conditioned on (unused at guidance_scale 0, as in diffusers)."}),
                "negative_prompt": ("STRING", {"default": "", "multiline": True,
                                               "tooltip": "Method 'model' only (ignored by the interpolation methods): what to steer away from when guidance_scale is above 1."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Method 'model' only (ignored by the interpolation methods): upscaler sampling steps."}),
                "guidance_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                             "tooltip": "Method 'model' only (ignored by the interpolation methods): 0 as ContinuitySeq (empty prompt, no guidance); above 1 guides with the prompts."}),
                "seed": (SEED[0], {**SEED[1], "tooltip": "Method 'model' only (ignored by the interpolation methods): "
                                                         "the upscaler's noise seed, drawn on the CPU."}),
                "vae": (VAE, {"tooltip": "The latents' VAE, for width and height in pixels on latents that are not 8x "
                                         "(Wan 2.2 TI2V 5B: 16x, LTX-Video: 32x); not needed with scale_by."}),
            },
        }

    def upscale(self, samples, method, scale_by, width, height, frames_per_batch, upscale_model=None, prompt="",
                negative_prompt="", steps=20, guidance_scale=0.0, seed=0, vae=None):
        check_numbers(self, locals())
        node = "LongVideoLatentUpscale"
        latents = video_latents(samples, node, "samples", None if vae is None else vae.latent_channels)
        if method not in METHODS:
            raise NodeInputError(f"{node}: method '{method}' is unknown: choose one of {', '.join(METHODS)}")
        if frames_per_batch < 1:
            raise NodeInputError(f"{node}: frames_per_batch must be at least 1, got {frames_per_batch}")
        if (width or height) and vae is None and latents.shape[1] in COARSER_LATENT_CHANNELS:
            raise NodeInputError(f"{node}: 'samples' has {latents.shape[1]} channels, the latents of a VAE that compresses "
                                 f"{COARSER_LATENT_CHANNELS[latents.shape[1]]}x, so width and height in pixels need the "
                                 "VAE: connect it to 'vae', or use scale_by with width and height 0")
        size = target_size(node, latents.shape[-2:], scale_by, width, height, latent_downscale(vae))
        if method != "model":
            return ({**samples, "samples": interpolate_latents(latents, size, method, frames_per_batch).to(intermediate_device())},)

        if upscale_model is None:
            raise NodeInputError(f"{node}: method 'model' needs an upscale_model: connect LongVideoLatentUpscaleModelLoader")
        doubled = tuple(MODEL_SCALE * s for s in latents.shape[-2:])
        if size != doubled:
            raise NodeInputError(
                f"{node}: method 'model' doubles height and width ({doubled[1] * LATENT_DOWNSCALE}x{doubled[0] * LATENT_DOWNSCALE}), "
                f"but scale_by/width/height ask for {size[1] * LATENT_DOWNSCALE}x{size[0] * LATENT_DOWNSCALE}: set scale_by 2 and "
                "width and height 0, and add an interpolation LongVideoLatentUpscale after it for other sizes"
            )
        if latents.shape[1] != upscale_model.latent_channels:
            raise NodeInputError(
                f"{node}: 'samples' has {latents.shape[1]} channels but the upscaler works on {upscale_model.latent_channels}: "
                "use an upscaler trained for this VAE's latents"
            )
        frames = latents.shape[0] * latents.shape[2]
        batches = -(-frames // frames_per_batch)
        with Progress(batches * steps, "latent upscale") as progress:
            upscaled = upscale_with_model(
                upscale_model, latents, steps=steps, seed=seed, prompt=prompt, negative_prompt=negative_prompt,
                guidance_scale=guidance_scale, frames_per_batch=frames_per_batch, callback=progress.update,
            )
        return ({**samples, "samples": upscaled.to(latents.dtype).to(intermediate_device())},)


def target_size(node: str, size, scale_by: float, width: int, height: int,
                downscale: int = LATENT_DOWNSCALE) -> tuple[int, int]:
    """The latent (height, width) asked for: width x height pixels (`downscale` pixels per latent pixel), one of them
    following the aspect ratio, or scale_by."""
    latent_height, latent_width = size
    if width or height:
        vae = SimpleNamespace(downscale=downscale)
        check_frame_size(node, width or downscale, height or downscale, vae)  # the side(s) that are set
        if not width:
            width = round(height * latent_width / latent_height / downscale) * downscale
        if not height:
            height = round(width * latent_height / latent_width / downscale) * downscale
        return max(height // downscale, 1), max(width // downscale, 1)
    if scale_by <= 0:
        raise NodeInputError(f"{node}: scale_by must be above 0, got {scale_by}")
    return max(round(latent_height * scale_by), 1), max(round(latent_width * scale_by), 1)
