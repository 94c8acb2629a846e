import os

import torch

from ..models.loader import DTYPES
from ..sampling import distributed, distributed_launch
from ..sampling.denoise import TextGuidance
from ..utils.comfy import Progress, intermediate_device, throw_if_interrupted
from .attention import LongVideoTemporalAttention
from .common import (
    SAMPLING, LATENT_DOWNSCALE, MODEL, NodeInputError, check_frame_size, conditioning_embeddings, frame_size_input,
    check_numbers, refuse_comfy_model,
)
from .common import graph_check
from .continuation import PROMPT_SCHEDULE
from .joins import every, with_joins
from .sampler import CFG, SCHEDULER, SEED, STEPS

NODE = "LongVideoDistributedSampler"
DUAL_SCOPE_INPUTS = ("padding", "global_frames", "local_phase_t", "local_phase_local_bias", "local_phase_global_bias",
                     "global_phase_t", "global_phase_local_bias", "global_phase_global_bias", "token_num_scale")


class LongVideoDistributedSampler:
    DESCRIPTION = (
        "Video-Infinity clip-parallel sampling: one long video of clips x frames_per_clip frames, each clip sampled by "
        "its own rank, all ranks in lockstep, every clip seeing its neighbours' frames and a global frame set through "
        "dual-scope attention. devices lists one GPU per rank (each loads the model in its own process); empty runs "
        "virtual_ranks clips in this process on the model's device. Clip r uses prompt_schedule line "
        "floor(r x lines / clips)."
    )
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The whole video latent: ranks x frames_per_clip frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        dual_scope = LongVideoTemporalAttention.INPUT_TYPES()["required"]
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model straight from LongVideoModelLoader (this node sets the temporal attention)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt of every clip, unless prompt_schedule is connected."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "width": frame_size_input("width"),
                "height": frame_size_input("height"),
                "devices": ("STRING", {"default": "", "tooltip": "One device per rank, e.g. 'cuda:0, cuda:1' (or '0, 1'; 'cpu, cpu' "
                                                                 "for CPU processes). Empty: virtual ranks in this process."}),
                "virtual_ranks": ("INT", {"default": 2, "min": 1, "max": 64,
                                          "tooltip": "Clips sampled in this process; only when devices is empty (ignored otherwise)."}),
                "frames_per_clip": ("INT", {"default": 24, "min": 1, "max": 1024, "tooltip": "Frames each rank samples; the video has ranks x this."}),
                **{name: (dual_scope[name][0], {**dual_scope[name][1], "tooltip": dual_scope[name][1]["tooltip"].replace(
                    "dual_scope mode only (ignored by full and window)", "dual-scope attention")}) for name in DUAL_SCOPE_INPUTS},
                "sync_group_norm": ("BOOLEAN", {"default": True, "tooltip": "Whole-video GroupNorm statistics in the temporal layers "
                                                                            "(a small all-reduce per layer). Off: per-clip statistics, as Video-Infinity."}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "scheduler": SCHEDULER,
            },
            "optional": {
                "prompt_schedule": (PROMPT_SCHEDULE, {"tooltip": "Prompts spread over the clips, from LongVideoPromptSchedule."}),
                "reference_mode": ("BOOLEAN", {"default": False, "tooltip": "Compute exactly what Video-Infinity's code computes: zero "
                                                                            "frames beyond the video's ends, per-rank GroupNorm (sync_group_norm "
                                                                            "is ignored), its global frames and key counts. Off: the missing "
                                                                            "neighbours are left out, which is cleaner at the ends. Needs 4 or more "
                                                                            "frames per clip and 1 <= padding <= frames_per_clip."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return graph_check(cls, locals(), lambda width, height: check_frame_size(cls.__name__, width, height))

    def sample(self, model, positive, negative, width, height, devices, virtual_ranks, frames_per_clip, padding, global_frames,
               local_phase_t, local_phase_local_bias, local_phase_global_bias, global_phase_t, global_phase_local_bias,
               global_phase_global_bias, token_num_scale, sync_group_norm, seed, steps, cfg, scheduler, prompt_schedule=None,
               reference_mode=False):
        check_numbers(self, locals())
        refuse_comfy_model(NODE, model, "clip-parallel sampling hooks the temporal convolutions, attention and "
                           "GroupNorms of the pack's UNet3D models, which ComfyUI's models do not have, so it is not "
                           "available for them yet: use LongVideoContinuationSampler or LongVideoHierarchicalSampler "
                           "on one GPU")
        check_frame_size(NODE, width, height, model)
        if getattr(model, "temporal_scope", None) is not None:
            raise NodeInputError(f"{NODE}: 'model' already has a temporal attention mode (LongVideoTemporalAttention); this node "
                                 "sets dual-scope attention itself: connect the model straight from LongVideoModelLoader")
        settings = distributed.ClipParallelSettings(
            frames_per_clip, padding, global_frames,
            (local_phase_t, local_phase_local_bias, local_phase_global_bias, global_phase_t, global_phase_local_bias,
             global_phase_global_bias), token_num_scale, sync_group_norm and not reference_mode, reference_mode,
        )
        try:
            settings.check()
            device_list = distributed_launch.parse_devices(devices) if devices.strip() else None
        except ValueError as error:
            raise NodeInputError(f"{NODE}: {error}") from None
        negative_tokens = conditioning_embeddings(negative, NODE, "negative", model.context_width)
        schedule = prompt_schedule if prompt_schedule is not None else [positive]
        name = "prompt_schedule" if prompt_schedule is not None else "positive"
        prompts = [TextGuidance(conditioning_embeddings(c, NODE, name, model.context_width), negative_tokens, cfg) for c in schedule]
        size = (1, height // LATENT_DOWNSCALE, width // LATENT_DOWNSCALE)
        with Progress(steps, "clip-parallel sampling") as progress:
            if device_list is None:
                results = distributed.sample_virtual(model, prompts, settings, virtual_ranks, size=size, steps=steps, seed=seed,
                                                     scheduler=scheduler, on_step=lambda step, total: progress.update())
                latents = distributed.join_clips(results)
            else:
                latents = self._sample_processes(model, prompts, settings, device_list, size, steps, seed, scheduler, progress)
        clip_starts = every(frames_per_clip, latents.shape[2])
        return (with_joins({"samples": latents.to(intermediate_device())}, clip_starts[1:]),)

    @staticmethod
    def _sample_processes(model, prompts, settings, devices, size, steps, seed, scheduler, progress):
        payload = {
            "model_path": model_folder(model.unet), "dtype": dtype_name(model.unet.dtype),
            "settings": {**vars(settings), "phases": list(settings.phases)},
            "prompts": [[p.positive.numpy(), None if p.negative is None else p.negative.numpy()] for p in prompts],
            "cfg": prompts[0].cfg, "size": list(size), "steps": steps, "seed": seed, "scheduler": scheduler,
        }
        results = distributed_launch.run_ranks(devices, "sampling.distributed_launch:sample_job", payload,
                                               on_step=lambda step, total: progress.update(), check_cancel=throw_if_interrupted)
        return torch.cat([torch.from_numpy(result["latents"]) for result in results], dim=2)


def model_folder(unet) -> str:
    """The diffusers folder a loaded UNet came from (worker processes load the model from it themselves)."""
    source = str(unet.config.get("_name_or_path") or "")
    folder = os.path.dirname(source.rstrip("/\\"))
    if not source or not os.path.isdir(os.path.join(folder, "unet")):
        raise NodeInputError(f"{NODE}: worker processes load the model from its folder, and this model's folder is unknown: "
                             "load it with LongVideoModelLoader from a diffusers folder, or leave devices empty")
    return folder


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)
