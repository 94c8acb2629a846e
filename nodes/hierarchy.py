import logging
import os

import torch

from ..models.denoiser import UNet3DDenoiser
from ..models.infinet import CONDITIONS, InfiNetDenoiser, load_infinet
from ..models.loader import ModelLoadError
from ..sampling import distributed_launch, hierarchy
from ..sampling.distributed_launch import rank_prompt_data, rank_prompts
from ..sampling.frame_conditioning import BLEND_STRENGTH
from ..utils.comfy import Progress, intermediate_device, model_search_folders, throw_if_interrupted
from .common import (
    save_partial_latent,
    LOADERS, NOTHING_FOUND, SAMPLING, MODEL, NodeInputError, check_frame_size, conditioning_prompt, frame_size_input, latent_downscale, latent_frame_size,
    validate_model_choice,
    video_latents,
)
from .common import DEVICES, check_fits, check_numbers, graph_check, partial_prefix, ranks_model, split_devices
from .continuation import PROMPT_SCHEDULE
from .joins import beside, with_joins
from .sampler import CFG, FRAME_GUIDANCE, SCHEDULER, SEED, STEPS

INFINET = "LV_INFINET"
INFINET_FOLDER = "infinet"
NO_INFINET_FOUND = NOTHING_FOUND
PROMPT_LAYOUTS = ("timeline", "per level")
PARTIAL_PREFIX = "LongVideo/hierarchical_partial"
WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
log = logging.getLogger(__name__)


def list_infinet_checkpoints() -> list[str]:
    """Files and unet folders in an infinet/ folder beside the models (models/diffusers/infinet, models/longvideo/infinet)."""
    names = []
    for folder in model_search_folders():
        infinet_folder = os.path.join(folder, INFINET_FOLDER)
        if os.path.isdir(infinet_folder):
            names += [f"{INFINET_FOLDER}/{entry}" for entry in sorted(os.listdir(infinet_folder))
                      if entry.endswith(WEIGHT_EXTENSIONS) or os.path.isdir(os.path.join(infinet_folder, entry))]
    return sorted(set(names))


def find_infinet_checkpoint(name: str) -> str | None:
    if os.path.exists(name):
        return os.path.abspath(name)
    for folder in model_search_folders():
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


class LongVideoInfiNetLoader:
    DESCRIPTION = (
        "Loads InfiNet weights (NUWA-XL's keyframe conditioning for UNet3D models) for LongVideoHierarchicalSampler "
        "with method 'learned': a checkpoint of the InfiNet repo (infinet.input_blocks_injections.N.*, a .bin file "
        "or a diffusers unet folder; its base UNet weights are used too) or our own .safetensors. Files are listed "
        "from an infinet/ folder under models/diffusers or models/longvideo."
    )
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (INFINET,)
    RETURN_NAMES = ("infinet",)
    OUTPUT_TOOLTIPS = ("InfiNet weights, for LongVideoHierarchicalSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "infinet": (list_infinet_checkpoints() or [NO_INFINET_FOUND],
                            {"tooltip": "An InfiNet checkpoint found in an infinet/ folder beside the models. none: nothing was found: type a path in infinet_path."}),
                "condition": (["auto", *CONDITIONS], {"default": "auto", "tooltip": (
                    "What InfiNet sees besides the keyframe mask. clean: the parent keyframe latents, middle frames zeroed "
                    "(NUWA-XL). noisy: the noisy sample (what the InfiNet repo trains on). auto: what our own files record, "
                    "else noisy.")}),
            },
            "optional": {
                "infinet_path": ("STRING", {"default": "", "tooltip": "A full path to a checkpoint; used instead of 'infinet' when set."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, infinet, infinet_path=None):
        return validate_model_choice("LongVideoInfiNetLoader", infinet, infinet_path, find_infinet_checkpoint,
                                     "models/longvideo/infinet or models/diffusers/infinet", "infinet_path")

    def load(self, infinet, condition, infinet_path=""):
        name = infinet_path.strip() or infinet
        if name == NO_INFINET_FOUND:
            raise NodeInputError("LongVideoInfiNetLoader: no InfiNet checkpoint was found: put one in models/longvideo/infinet "
                                 "(or models/diffusers/infinet), or type its full path in infinet_path")
        path = find_infinet_checkpoint(name)
        if path is None:
            raise NodeInputError(f"LongVideoInfiNetLoader: '{name}' was not found: check the file exists, or type its full path in infinet_path")
        try:
            return (load_infinet(path, condition),)
        except ModelLoadError as error:
            raise NodeInputError(f"LongVideoInfiNetLoader: {error}") from None


class LongVideoHierarchicalSampler:
    DESCRIPTION = (
        "NUWA-XL's diffusion over diffusion: keyframes first, then every pair of neighbouring frames filled with "
        "keyframes - 2 new frames, level after level; parent frames never change. depth m gives (keyframes - 1)^m + 1 "
        "frames. The runs of a level are independent and sampled batch_cap at a time; results do not depend on "
        "batch_cap. If a level fails or is cancelled, the finished levels are saved as "
        "output/LongVideo/hierarchical_partial_*.latent (feed it back as start_latent to go on)."
    )
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The whole video latent: (keyframes - 1)^depth + 1 frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model (optionally through LongVideoTemporalAttention)."}),
                "prompts": (PROMPT_SCHEDULE, {"tooltip": "Prompts from LongVideoPromptSchedule, laid out by prompt_layout."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "prompt_layout": (list(PROMPT_LAYOUTS), {"default": "timeline", "tooltip": (
                    "timeline: the lines are spread evenly over the final video and every run takes the line at its middle "
                    "(the global pass takes the middle line). per level: line 1 for the keyframes, line 2 for every run of "
                    "level 2, and so on; the last line carries on.")}),
                "width": frame_size_input("width"),
                "height": frame_size_input("height"),
                "keyframes": ("INT", {"default": 16, "min": 3, "max": 256,
                                      "tooltip": "L: frames per run. Level 1 makes L keyframes; each later level puts L - 2 frames between every pair."}),
                "depth": ("INT", {"default": 2, "min": 1, "max": 8, "tooltip": "m: levels. The video has (L - 1)^m + 1 frames."}),
                "method": (list(hierarchy.METHODS), {"default": "replace", "tooltip": (
                    "How runs keep their two endpoint frames. replace: re-noise them each step (any model). guidance: "
                    "reconstruction guidance (a backward pass per step). learned: the model takes them (the embedded model, "
                    "InfiNet: connect infinet; ComfyUI's Wan FLF2V / Fun InP / 2.2 I2V, VACE and LTX-Video through their "
                    "own first-last-frame conditioning). resample: replace plus RePaint's resampling of the noisier half of the steps "
                    "(any model, 2x the model calls). blend: the new frames start from their parents mixed along time and "
                    "only the last half of the steps runs (any model, training-free, the fewest seams without learned).")}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "scheduler": SCHEDULER,
                "batch_cap": ("INT", {"default": 8, "min": 1, "max": 4096,
                                      "tooltip": "Most runs of a level sampled side by side: higher is faster and needs more GPU memory."}),
            },
            "optional": {
                "infinet": (INFINET, {"tooltip": "Method 'learned' only (ignored by replace and guidance): InfiNet weights from LongVideoInfiNetLoader."}),
                "devices": DEVICES,
                "infill_model": (MODEL, {"tooltip": (
                    "The model that fills the gaps (every level after the keyframes), with 'method'; 'model' then makes "
                    "only the keyframes. E.g. Wan 2.2 A14B: the text-to-video experts make the keyframes, the "
                    "image-to-video experts fill between them from both parents (method learned: first-last-frame). "
                    "Not connected: 'model' does both.")}),
                "guidance_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "guidance method only (ignored by replace and learned): the strength of the reconstruction guidance."}),
                "start_latent": ("LATENT", {"tooltip": "Levels already made, (L - 1)^j + 1 frames (e.g. a partial result, or any clip of L "
                                                       "frames as keyframes): sampling goes on from level j + 1."}),
                "blend_strength": ("FLOAT", {"default": BLEND_STRENGTH, "min": 0.05, "max": 1.0, "step": 0.05, "tooltip": (
                    "blend method only: the share of the steps run from the blended known frames. Lower keeps the blend's layout "
                    "(fewest seams where keyframes are close in time); higher lets the model change more (fast motion).")}),
                "infill_cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": (
                    "CFG of every level after the keyframes; 0: the same as cfg. Those runs already see their two keyframes, "
                    "so a lower CFG (about 3 with the embedded model) lets the new frames follow them rather than redraw "
                    "the prompt, and they join the keyframes more smoothly.")}),
                "frame_guidance": FRAME_GUIDANCE,
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return graph_check(cls, locals(), lambda width, height: check_frame_size(cls.__name__, width, height))

    def sample(self, model, prompts, negative, prompt_layout, width, height, keyframes, depth, method, seed, steps, cfg,
               scheduler, batch_cap, infinet=None, guidance_weight=1.0, start_latent=None, blend_strength=BLEND_STRENGTH,
               infill_cfg=0.0, frame_guidance=1.0, infill_model=None, devices="", prompt=None, unique_id=None):
        check_numbers(self, locals())
        prefix = partial_prefix(prompt, unique_id, PARTIAL_PREFIX)
        node = "LongVideoHierarchicalSampler"
        check_frame_size(node, width, height, model)
        device_list = split_devices(node, devices)
        plan = hierarchy.HierarchyPlan(keyframes, depth)
        settings = hierarchy.HierarchySettings(batch_cap, method, guidance_weight, blend_strength, infill_cfg or None,
                                               frame_guidance)
        _check_infill_model(node, model, infill_model)
        try:
            plan.check()
            settings.check(infill_model or model, plan)
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        if prompt_layout not in PROMPT_LAYOUTS:
            raise NodeInputError(f"{node}: prompt_layout '{prompt_layout}' is unknown: choose {' or '.join(PROMPT_LAYOUTS)}")
        size = latent_frame_size(model, width, height)
        check_fits(node, model, batch=1, call_frames=keyframes, kept_frames=plan.frames, copies=2, height=size[0],
                   width=size[1], change="lower depth or keyframes")
        infill = self._denoiser(node, infill_model or model, method, infinet)
        denoiser = model if infill_model is not None else infill

        lines = [conditioning_prompt(c, node, "prompts", model) for c in prompts]
        layout = hierarchy.timeline_prompts if prompt_layout == "timeline" else hierarchy.level_prompts
        negative_prompt = conditioning_prompt(negative, node, "negative", model)
        start = self._start(node, model, plan, start_latent, size)
        first_level = 0 if start is None else plan.level_of_start(start.shape[2])
        ranks = 1 if device_list is None else len(device_list)
        with Progress(plan.runs(batch_cap, first_level, 0, ranks) * steps, "hierarchical") as progress:
            if device_list is not None:
                payload = {"model": ranks_model(node, denoiser),
                           "infill_model": None if infill is denoiser else ranks_model(node, infill),
                           "plan": [keyframes, depth], "settings": vars(settings), "negative": rank_prompt_data(negative_prompt),
                           "prompts": [rank_prompts(level) for level in layout(plan, lines)], "cfg": cfg, "size": list(size),
                           "steps": steps, "seed": seed, "scheduler": scheduler, "start": start}
                latents = _sample_on_ranks(device_list, payload, progress, prefix)
            else:
                try:
                    latents = hierarchy.sample_hierarchy(
                        denoiser, plan, layout(plan, lines), negative_prompt, cfg, settings, size=size, steps=steps,
                        seed=seed, scheduler=scheduler, start=start, on_step=lambda level, step: progress.update(),
                        infill_denoiser=None if infill is denoiser else infill,
                    )
                except hierarchy.LevelsInterrupted as interrupted:
                    if interrupted.latents is not None:
                        _save_partial(interrupted.latents, prefix)
                    raise interrupted.cause
        parents = plan.level_frames(plan.depth - 2) if plan.depth > 1 else []
        return (with_joins({"samples": latents.to(intermediate_device())}, beside(parents, plan.frames), parents),)

    @staticmethod
    def _denoiser(node, model, method, infinet):
        if infinet is None:
            if method == "learned" and not model.takes_known_frames:
                raise NodeInputError(f"{node}: method 'learned' needs InfiNet weights: connect LongVideoInfiNetLoader to "
                                     "'infinet', or choose 'replace' or 'guidance'")
            return model
        if method != "learned":
            raise NodeInputError(f"{node}: InfiNet is connected but method is '{method}': choose 'learned' to use it, "
                                 "or disconnect 'infinet'")
        if not isinstance(model, UNet3DDenoiser):
            raise NodeInputError(f"{node}: InfiNet attaches to a diffusers UNet3D model (LongVideoModelLoader), not to {type(model).__name__}")
        try:
            return InfiNetDenoiser.from_weights(model, infinet)
        except (ModelLoadError, ValueError) as error:
            raise NodeInputError(f"{node}: {error}") from None

    @staticmethod
    def _start(node, model, plan, start_latent, size):
        if start_latent is None:
            return None
        start = video_latents(start_latent, node, "start_latent", model.latent_channels)
        if start.shape[0] != 1:
            raise NodeInputError(f"{node}: start_latent holds {start.shape[0]} videos; this sampler makes one: pick one first")
        if tuple(start.shape[3:]) != size:
            raise NodeInputError(f"{node}: start_latent is {start.shape[4] * latent_downscale(model)}x{start.shape[3] * latent_downscale(model)}; "
                                 "set width and height to match")
        try:
            plan.level_of_start(start.shape[2])
        except ValueError as error:
            raise NodeInputError(f"{node}: {error} (keyframes {plan.keyframes}, depth {plan.depth})") from None
        return start


def _sample_on_ranks(devices, payload: dict, progress, prefix: str) -> torch.Tensor:
    """hierarchy_job on one worker process per device; the levels rank 0 reports are kept if a later one fails."""
    finished = {}

    def keep(rank, report):
        finished["latents"] = torch.from_numpy(report["latents"])

    try:
        results = distributed_launch.run_ranks(devices, "sampling.distributed_launch:hierarchy_job", payload,
                                               on_step=lambda step, total: progress.update(),
                                               check_cancel=throw_if_interrupted, on_report=keep)
    except BaseException:
        if "latents" in finished:
            _save_partial(finished["latents"], prefix)
        raise
    return torch.from_numpy(results[0]["latents"])


def _check_infill_model(node, model, infill_model) -> None:
    if infill_model is None:
        return
    for fact in ("latent_channels", "downscale"):
        if getattr(infill_model, fact, None) != getattr(model, fact, None):
            raise NodeInputError(f"{node}: 'infill_model' works on latents with {fact.replace('_', ' ')} "
                                 f"{getattr(infill_model, fact, None)} but 'model' on {getattr(model, fact, None)}: "
                                 "connect two models of one family (the same VAE)")


def _save_partial(latents: torch.Tensor, prefix: str) -> None:
    path = save_partial_latent(latents, prefix)
    log.warning("LongVideoHierarchicalSampler stopped; the %d frames of the finished levels are in %s", latents.shape[2], path)