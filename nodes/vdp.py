import logging
import re

import torch

from ..models.loader import DTYPES, ModelLoadError, resolve_dtype
from ..models.vdp import VDPDenoiser, null_embedding_looks_untrained
from ..models.vdp_checkpoint import EXTENSIONS, load_vdp
from ..models.vdp_text import bert_condition
from ..utils.comfy import find_model_file, intermediate_device, list_model_files
from .common import (
    CONDITIONING, LOADERS, MODEL, NOTHING_FOUND, VAE, NodeInputError, check_numbers, model_class_name,
    validate_model_choice,
)

NO_FILE_FOUND = NOTHING_FOUND
CONDITION_MODES = ("null", "zeros", "values", "random", "bert")
log = logging.getLogger(__name__)


class LongVideoVDPLoader:
    DESCRIPTION = (
        "Loads a lucidrains video-diffusion-pytorch checkpoint (Trainer model-N.pt, or a Unet3D / GaussianDiffusion "
        "state dict as .pt or .safetensors; v0.7 RMSNorm and v0.6 GroupNorm). Its hyper-parameters are read off the "
        "tensor shapes. The model works on pixels: make its latent with LongVideoEmptyLatent + this vae, its "
        "conditioning with LongVideoVDPCondition; scheduler ddpm at 1000 steps is the original sampler."
    )
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, VAE)
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The pixel-space video model, for every LongVideo sampler.",
                       "Pixels as latents: (x + 1) / 2 to decode, for LongVideoEmptyLatent, Decode, Encode and SaveVideo.")

    @classmethod
    def INPUT_TYPES(cls):
        files = list_model_files(EXTENSIONS) or [NO_FILE_FOUND]
        return {
            "required": {
                "checkpoint": (files, {"tooltip": "A checkpoint file found under models/longvideo or models/diffusers. none: nothing was found: type a path in checkpoint_path."}),
                "dtype": (["auto", *DTYPES], {"default": "auto", "tooltip": "Weights precision. auto: fp16 on NVIDIA GPUs, fp32 on the CPU."}),
                "weights": (["ema", "model"], {"default": "ema",
                                               "tooltip": "Which copy of a Trainer checkpoint: ema (averaged, usually better) or model. Plain state dicts ignore it."}),
            },
            "optional": {
                "checkpoint_path": ("STRING", {"default": "", "tooltip": "A full path to a checkpoint file; when set it is used instead of 'checkpoint'."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint, checkpoint_path=None):
        return validate_model_choice("LongVideoVDPLoader", checkpoint, checkpoint_path, find_model_file,
                                     "models/longvideo or models/diffusers", "checkpoint_path")

    def load(self, checkpoint, dtype, weights, checkpoint_path=""):
        name = checkpoint_path.strip() or checkpoint
        if name == NO_FILE_FOUND:
            raise NodeInputError(
                "LongVideoVDPLoader: no checkpoint file was found: put a video-diffusion-pytorch model-N.pt or "
                ".safetensors under models/longvideo, or type its full path in checkpoint_path"
            )
        path = find_model_file(name)
        if path is None:
            raise NodeInputError(f"LongVideoVDPLoader: checkpoint '{name}' was not found: check the file exists, or type its full path")
        try:
            loaded = load_vdp(path, resolve_dtype(dtype), weights)
        except ModelLoadError as error:
            raise NodeInputError(f"LongVideoVDPLoader: {error}") from None
        return (loaded.denoiser, loaded.vae)


class LongVideoVDPCondition:
    DESCRIPTION = (
        "The condition vector of a video-diffusion-pytorch model (one vector of its cond_dim per video, no text "
        "encoder) as CONDITIONING for the LongVideo samplers. null: the model's unconditional vector, the negative "
        "for classifier-free guidance. zeros / values / random: a vector you choose. bert: a prompt through a local "
        "BERT (bert-base-cased) folder, mean-pooled as the original does, for models trained with use_bert_text_cond."
    )
    CATEGORY = CONDITIONING
    FUNCTION = "condition"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The condition vector as CONDITIONING, for a sampler's positive or negative.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The model from LongVideoVDPLoader (sets the width and holds the null vector)."}),
                "mode": (list(CONDITION_MODES), {"default": "null", "tooltip": "null, zeros, values, random or bert (see the node description)."}),
            },
            "optional": {
                "values": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "values mode: cond_dim numbers separated by commas or spaces (one number fills every entry)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "random mode: the seed of the N(0, 1) vector."}),
                "text": ("STRING", {"multiline": True, "default": "", "tooltip": "bert mode: the prompt."}),
                "bert_path": ("STRING", {"default": "", "tooltip": "bert mode: full path of a local bert-base-cased folder (model + tokenizer)."}),
            },
        }

    def condition(self, model, mode, values="", seed=0, text="", bert_path=""):
        check_numbers(self, locals())
        node = "LongVideoVDPCondition"
        if not isinstance(model, VDPDenoiser):
            raise NodeInputError(f"{node}: 'model' ({model_class_name(model)}) is not a video-diffusion-pytorch model: "
                                 "connect LongVideoVDPLoader")
        width = model.context_width
        if mode not in CONDITION_MODES:
            raise NodeInputError(f"{node}: mode '{mode}' is unknown: choose one of {', '.join(CONDITION_MODES)}")
        if width == 0:
            vector = torch.zeros(1, 0)  # an unconditional model ignores its conditioning
        elif mode == "null":
            vector = model.null_condition
            if null_embedding_looks_untrained(vector):
                log.warning("%s: this model's null vector looks untrained (it was likely never dropped in training): "
                            "guidance against it may give poor results: try cfg 1", node)
        elif mode == "zeros":
            vector = torch.zeros(1, width)
        elif mode == "random":
            vector = torch.randn(1, width, generator=torch.Generator("cpu").manual_seed(int(seed)))
        elif mode == "values":
            vector = _parse_values(node, values, width)
        else:
            if not bert_path.strip() or not text.strip():
                raise NodeInputError(f"{node}: bert mode needs 'text' and 'bert_path' (a local bert-base-cased folder)")
            try:
                vector = bert_condition(bert_path.strip(), [text])
            except ModelLoadError as error:
                raise NodeInputError(f"{node}: {error}") from None
            if vector.shape[-1] != width:
                raise NodeInputError(f"{node}: the BERT model at {bert_path} gives {vector.shape[-1]} values but the model "
                                     f"takes {width}: use the text encoder it was trained with (bert-base-cased: 768)")
        vector = vector.float().to(intermediate_device())
        return ([[vector[:, None, :], {"pooled_output": vector}]],)


def _parse_values(node: str, text: str, width: int) -> torch.Tensor:
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise NodeInputError(f"{node}: 'values' must be numbers separated by commas or spaces, got '{text[:60]}'") from None
    if len(numbers) == 1:
        numbers = numbers * width
    if len(numbers) != width:
        raise NodeInputError(f"{node}: 'values' holds {len(numbers)} numbers but the model takes {width}: give {width} (or one)")
    return torch.tensor([numbers], dtype=torch.float32)
