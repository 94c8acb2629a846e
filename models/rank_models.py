"""The same model on every worker rank: what a rank process needs to build it on its own device.

A worker process starts empty (spawned), so the model goes to it as plain data it can rebuild from:

- the pack's UNet3D models: their diffusers folder and dtype (each rank loads the weights itself, as the clip-parallel
  ranks always have), the temporal attention scope a LongVideoTemporalAttention node set, and InfiNet's checkpoint;
- ComfyUI's models: see models/comfy_ranks.py.

`rank_model(denoiser)` makes the description in the launching process (a ValueError says why a model cannot go to
ranks), `build_rank_model(spec, device)` rebuilds it in a worker.
"""

import dataclasses
import os

import torch

from ..attention import temporal
from .loader import DTYPES, load_text_to_video


def model_folder(unet) -> str:
    """The diffusers folder a loaded UNet came from (worker processes load the model from it themselves)."""
    source = str(unet.config.get("_name_or_path") or "")
    folder = os.path.dirname(source.rstrip("/\\"))
    if not source or not os.path.isdir(os.path.join(folder, "unet")):
        raise ValueError("worker processes load the model from its folder, and this model's folder is unknown: load it "
                         "with LongVideoModelLoader from a diffusers folder, or leave devices empty")
    return folder


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def rank_model(denoiser) -> dict:
    """What a worker needs to rebuild `denoiser` (plain data: strings, numbers, bytes)."""
    if getattr(denoiser, "samples_itself", False):
        from .comfy_ranks import comfy_rank_model

        return comfy_rank_model(denoiser)
    infinet = getattr(denoiser, "infinet", None)
    base = denoiser.base if infinet is not None else denoiser
    unet = getattr(base, "unet", None)
    if unet is None or (infinet is not None and not getattr(denoiser, "source", "")):
        raise ValueError(f"{type(denoiser).__name__} cannot be sent to worker ranks: use a model from LongVideoModelLoader "
                         "(with InfiNet from LongVideoInfiNetLoader) or LongVideoComfyModel, or leave devices empty")
    scope = getattr(base, "temporal_scope", None)
    return {"kind": "unet3d", "path": model_folder(unet), "dtype": dtype_name(unet.dtype),
            "scope": None if scope is None else {"class": type(scope).__name__, "fields": dataclasses.asdict(scope)},
            "infinet": None if infinet is None else {"path": denoiser.source, "condition": denoiser.condition}}


def build_rank_model(spec: dict, device: torch.device):
    """The model `rank_model` described, for `device` (the worker's own: the model's load() places it there)."""
    if spec["kind"] == "comfy":
        from .comfy_ranks import build_comfy_rank_model

        return build_comfy_rank_model(spec, device)
    denoiser = load_text_to_video(spec["path"], DTYPES[spec["dtype"]]).denoiser
    if spec["scope"] is not None:
        denoiser = denoiser.with_temporal_attention(getattr(temporal, spec["scope"]["class"])(**spec["scope"]["fields"]))
    if spec["infinet"] is not None:
        from .infinet import InfiNetDenoiser, load_infinet

        denoiser = InfiNetDenoiser.from_weights(denoiser, load_infinet(spec["infinet"]["path"], spec["infinet"]["condition"]))
    return denoiser
