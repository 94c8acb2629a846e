"""ComfyUI's own video models (Load Diffusion Model / Load VAE / Load CLIP) into the LongVideo samplers.

LongVideoComfyModel turns ComfyUI's MODEL (and VAE) into the pack's LV_MODEL (and LV_VAE), so the continuation,
hierarchical and latent interpolation samplers drive Wan 2.1 / 2.2, LTX-Video, HunyuanVideo, ... with ComfyUI's own
sampling. LongVideoComfyPromptSchedule makes the per-chunk / per-level prompt list with ComfyUI's CLIP. The adapter
module (models/comfy_model.py) is imported only when these nodes run.
"""

from ..utils.comfy import comfy_sampling_names
from .common import CONDITIONING, LOADERS, MODEL, VAE, NodeInputError, check_numbers
from .continuation import PROMPT_SCHEDULE

FROM_NODE = "(the sampler node's scheduler)"


class LongVideoComfyModel:
    DESCRIPTION = (
        "Lets the LongVideo samplers (continuation, hierarchical, latent interpolation) drive a video model loaded by "
        "ComfyUI's own nodes: Wan 2.1 / 2.2, LTX-Video, HunyuanVideo from Load Diffusion Model, with LoRAs and patches "
        "applied. Every clip is sampled by ComfyUI's own sampler on the model's own sigmas; known frames use ComfyUI's "
        "noise mask (replace, blend) or, with method learned, the model's own image conditioning built by ComfyUI's "
        "node for it from the known frames (Wan I2V / FLF2V / Fun InP / VACE / 2.2 TI2V, LTX-Video, HunyuanVideo I2V; "
        "needs vae). Wan 2.2 A14B: connect the low-noise expert too. The whole CONDITIONING (attention masks, pooled "
        "outputs, WanImageToVideo's latents) reaches the model. Frame counts on these samplers are latent frames: Wan "
        "and HunyuanVideo make 4 x (latent frames - 1) + 1 pixel frames, LTX-Video 8 x (latent frames - 1) + 1."
    )
    CATEGORY = LOADERS
    FUNCTION = "adapt"
    RETURN_TYPES = (MODEL, VAE)
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The model for the LongVideo samplers.",
                       "The VAE for LongVideoSaveVideo / LongVideoDecode / start images (None when vae is not connected).")

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedules = comfy_sampling_names()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A video model from Load Diffusion Model (UNETLoader), LoRAs and patches applied."}),
                "sigma_schedule": (schedules, {"default": "simple", "tooltip": (
                    "ComfyUI's scheduler: the sigmas from the model's own model_sampling (simple is what the Wan, LTX-Video "
                    "and HunyuanVideo example workflows use).")}),
                "sampler": ([FROM_NODE, *samplers], {"default": FROM_NODE, "tooltip": (
                    "ComfyUI's sampler for every clip. The default takes the sampler node's scheduler: euler, dpmpp_2m, "
                    "unipc (uni_pc), ddim, euler_ancestral, dpmpp_2m_karras (dpmpp_2m on karras sigmas).")}),
            },
            "optional": {
                "vae": ("VAE", {"tooltip": "The model's VAE from Load VAE, for saving, decoding, start images and method "
                                           "'learned' (the known frames reach the model as pixels, as it was trained)."}),
                "decode_context": ("INT", {"default": 2, "min": 0, "max": 64, "tooltip": (
                    "Latent frames decoded before every decode batch (and dropped) so that a causal video VAE continues "
                    "across batch boundaries without a seam. Not used with the Wan 2.1 VAE, whose decoder carries its "
                    "causal cache from batch to batch (exactly the whole decode).")}),
                "clip_vision": ("CLIP_VISION", {"tooltip": (
                    "Method 'learned' on Wan 2.1 image-to-video and first-last-frame 14B only: Load CLIP Vision "
                    "(clip_vision_h); the known frames' CLIP vision embedding goes to the model as in WanImageToVideo.")}),
                "low_noise_model": ("MODEL", {"tooltip": (
                    "Wan 2.2 A14B: the low-noise expert (Load Diffusion Model with its own LoRAs); 'model' is then the "
                    "high-noise expert. Every clip runs as ComfyUI's Wan 2.2 template runs: the high-noise expert on "
                    "the noisiest steps, the low-noise expert on the rest.")}),
                "expert_boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip": (
                    "With low_noise_model: steps that start at a sigma of at least this run on the high-noise expert "
                    "(Wan's own switch). 0: Wan's defaults, 0.875 for text-to-video and 0.9 for image-to-video.")}),
                "switch_step": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": (
                    "With low_noise_model: the step from which the low-noise expert samples (end_at_step of the Wan 2.2 "
                    "template's first KSamplerAdvanced, e.g. 2 of 4 steps with a 4-step LoRA); 0 uses expert_boundary.")}),
            },
        }

    def adapt(self, model, sigma_schedule, sampler, vae=None, decode_context=2, clip_vision=None, low_noise_model=None,
              expert_boundary=0.0, switch_step=0):
        from ..models.comfy_model import ComfyDenoiser, ComfyVAE

        check_numbers(self, locals())
        node = "LongVideoComfyModel"
        for name, value in (("model", model), ("low_noise_model", low_noise_model)):
            if value is not None and not hasattr(value, "get_model_object"):
                raise NodeInputError(f"{node}: '{name}' is not a ComfyUI MODEL: connect Load Diffusion Model (UNETLoader)")
        if clip_vision is not None and not hasattr(clip_vision, "encode_image"):
            raise NodeInputError(f"{node}: 'clip_vision' is not a CLIP_VISION model: connect Load CLIP Vision")
        try:
            denoiser = ComfyDenoiser(model, sigma_schedule, None if sampler == FROM_NODE else sampler, vae=vae,
                                     clip_vision=clip_vision, low_noise=low_noise_model,
                                     boundary=expert_boundary or None, switch_step=switch_step)
            denoiser.sampler_and_schedule(denoiser.sampler or "euler")
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        if low_noise_model is not None:
            low = low_noise_model.get_model_object("latent_format")
            if type(low) is not type(denoiser.latent_format):
                raise NodeInputError(f"{node}: the low-noise expert works on {type(low).__name__} latents but 'model' on "
                                     f"{type(denoiser.latent_format).__name__}: load the two experts of one Wan 2.2 A14B model")
        adapted_vae = None
        if vae is not None:
            adapted_vae = ComfyVAE(vae, decode_context)
            if adapted_vae.latent_channels != denoiser.latent_channels:
                raise NodeInputError(f"{node}: the VAE makes {adapted_vae.latent_channels}-channel latents but the model "
                                     f"works on {denoiser.latent_channels}: load the VAE that belongs to this model")
        return (denoiser, adapted_vae)


class LongVideoShapesWanLoader:
    DESCRIPTION = (
        "Loads the pack's own Wan-class model of moving coloured shapes (64x64; tools/train_wan_shapes.py): a small "
        "transformer of ComfyUI's WanModel class as a ComfyUI MODEL (what Load Diffusion Model makes of its file), its "
        "text encoder as a CLIP for CLIP Text Encode and LongVideo ComfyUI Prompt Schedule, and its causal video VAE "
        "(Wan 2.1's latent layout: 16 channels, 8x spatial, 4x temporal) as a VAE. A stand-in for Wan 2.1 that samples "
        "in seconds on a CPU, to try the long-video methods with. Prompts: 'a <colour> <shape> moving <direction>' "
        "(red, green, blue, yellow; circle, square, triangle; left, right, up, down)."
    )
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("model", "clip", "vae")
    OUTPUT_TOOLTIPS = ("The transformer, for LongVideo ComfyUI Model, KSampler or any node that takes a Wan 2.1 MODEL.",
                       "The text encoder, for CLIP Text Encode and LongVideo ComfyUI Prompt Schedule.",
                       "The VAE, for LongVideo ComfyUI Model, VAE Decode, WanImageToVideo, ...")

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.shapes_wan import TRANSFORMER_FILES

        return {
            "required": {
                "variant": (list(TRANSFORMER_FILES), {"default": "image-to-video", "tooltip": (
                    "image-to-video: 36 input channels (Wan's mask and image latents, the layout of Wan 2.2 A14B I2V and "
                    "Wan Fun InP), so method 'learned' works (WanImageToVideo / WanFirstLastFrameToVideo); it makes text-"
                    "to-video when no image is given. text-to-video: 16 input channels, as Wan 2.1 T2V; the same network "
                    "without the image channels.")}),
            }
        }

    def load(self, variant):
        from ..models.loader import ModelLoadError
        from ..models.shapes_wan import load_shapes_wan

        try:
            return load_shapes_wan(variant)
        except ModelLoadError as error:
            raise NodeInputError(f"LongVideoShapesWanLoader: {error}") from None


class LongVideoComfyPromptSchedule:
    DESCRIPTION = ("One prompt per line, encoded with ComfyUI's CLIP (Load CLIP): for the hierarchical sampler's prompts "
                   "and the continuation sampler's prompt_schedule with ComfyUI's video models.")
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = (PROMPT_SCHEDULE,)
    RETURN_NAMES = ("prompt_schedule",)
    OUTPUT_TOOLTIPS = ("One CONDITIONING per line.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder from Load CLIP (umT5 for Wan, T5 for LTX-Video, ...)."}),
                "text": ("STRING", {"multiline": True, "tooltip": "One prompt per line; empty lines are skipped."}),
            }
        }

    def encode(self, clip, text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise NodeInputError("LongVideoComfyPromptSchedule: 'text' holds no prompt: write one prompt per line")
        return ([clip.encode_from_tokens_scheduled(clip.tokenize(line)) for line in lines],)
