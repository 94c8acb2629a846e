from ..models.loader import DTYPES, load_text_to_video, resolve_dtype
from ..utils.comfy import EMBEDDED_MODEL, find_model_folder, list_model_folders
from .common import CATEGORY, CLIP, MODEL, VAE, NodeInputError

NO_MODEL_FOUND = "(no model folder found: type a path in model_path)"


class LongVideoModelLoader:
    DESCRIPTION = (
        "Loads a diffusers-format text-to-video model folder (ModelScope text-to-video-ms-1.7b, Zeroscope v2): "
        "its UNet3D, CLIP text encoder and VAE. Folders are listed from models/diffusers and models/longvideo."
    )
    CATEGORY = CATEGORY
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
            },
        }

    def load(self, model, dtype, model_path=""):
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
        loaded = load_text_to_video(folder, resolve_dtype(dtype))
        return (loaded.denoiser, loaded.text_encoder, loaded.vae)
