from ..models.loader import ATTENTION_BACKENDS, DTYPES, load_text_to_video, resolve_dtype
from ..utils.comfy import EMBEDDED_MODEL, find_model_folder, list_model_folders
from .common import CLIP, LOADERS, MODEL, NOTHING_FOUND, VAE, NodeInputError, validate_model_choice, check_numbers

NO_MODEL_FOUND = NOTHING_FOUND


class LongVideoModelLoader:
    DESCRIPTION = (
        "Loads a diffusers-format text-to-video model folder (ModelScope text-to-video-ms-1.7b, Zeroscope v2, "
        "ContinuitySeq): its UNet3D, CLIP text encoder and VAE. The UNet kind is told by its weights. Folders are "
        "listed from models/diffusers and models/longvideo."
    )
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, CLIP, VAE)
    RETURN_NAMES = ("model", "clip", "vae")
    OUTPUT_TOOLTIPS = ("The video UNet, for the samplers.", "The text encoder, for LongVideoTextEncode.", "The VAE.")

    @classmethod
    def INPUT_TYPES(cls):
        folders = list_model_folders() or [NO_MODEL_FOUND]
        default = EMBEDDED_MODEL if EMBEDDED_MODEL in folders else folders[0]
        return {
            "required": {
                "model": (folders, {"default": default, "tooltip": (
                    "A model folder found under models/diffusers or models/longvideo. "
                    f"{EMBEDDED_MODEL} is the pack's own tiny model of moving coloured shapes (64x64).")}),
                "dtype": (
                    ["auto", *DTYPES],
                    {"default": "auto", "tooltip": "Weights precision. auto: fp16 on NVIDIA GPUs, fp32 on the CPU."},
                ),
            },
            "optional": {
                "model_path": (
                    "STRING",
                    {"default": "", "tooltip": "A full path to a model folder; when set it is used instead of 'model'."},
                ),
                "corrected_padding_mask": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "ContinuitySeq checkpoints only (ignored otherwise). Off reproduces "
                     "the original code, which the checkpoint was trained with: its conditioning attention masks the "
                     "real conditioning frames and attends to the zero padding (an inverted mask). On masks the "
                     "padding instead: an experiment, the checkpoint never saw it."},
                ),
                "attention": (
                    list(ATTENTION_BACKENDS),
                    {"default": "sdpa", "tooltip": "How attention runs: sdpa (PyTorch's fused attention, the default) or "
                                                   "xformers (needs the xformers package and an NVIDIA GPU)."},
                ),
                "vae_scale": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.01,
                     "tooltip": "Multiplies the VAE's scaling factor (ContinuitySeq's --vae-scale): latents are encoded "
                                "times scaling_factor * vae_scale and decoded divided by it. 1 for most models."},
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model, model_path=None):
        return validate_model_choice("LongVideoModelLoader", model, model_path, find_model_folder,
                                     "models/diffusers or models/longvideo", "model_path")

    def load(self, model, dtype, model_path="", corrected_padding_mask=False, attention="sdpa", vae_scale=1.0):
        check_numbers(self, locals())
        name = model_path.strip() or model
        if name == NO_MODEL_FOUND:
            raise NodeInputError(
                "LongVideoModelLoader: no model folder was found: put a diffusers text-to-video folder "
                "(e.g. zeroscope_v2_576w) under models/diffusers, or type its full path in model_path"
            )
        folder = find_model_folder(name)
        if folder is None:
            raise NodeInputError(
                f"LongVideoModelLoader: model '{name}' was not found: check the folder exists under models/diffusers, "
                "or type its full path in model_path"
            )
        if attention not in ATTENTION_BACKENDS:
            raise NodeInputError(f"LongVideoModelLoader: attention '{attention}' is unknown: choose one of {', '.join(ATTENTION_BACKENDS)}")
        if not vae_scale > 0:
            raise NodeInputError(f"LongVideoModelLoader: vae_scale must be above 0, got {vae_scale}: use 1 for the VAE's own scale")
        loaded = load_text_to_video(folder, resolve_dtype(dtype), corrected_padding_mask=corrected_padding_mask,
                                    attention=attention, vae_scale=vae_scale)
        return (loaded.denoiser, loaded.text_encoder, loaded.vae)
