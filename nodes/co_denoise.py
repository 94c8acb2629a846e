import torch

from ..sampling import co_denoise, distributed_launch
from ..sampling.denoise import TextGuidance
from ..sampling.distributed_launch import rank_prompt_data
from ..utils.comfy import Progress, intermediate_device, throw_if_interrupted
from .common import (
    DEVICES, MODEL, SAMPLING, VAE, NodeInputError, check_fits, check_frame_size, check_numbers, conditioning_prompt,
    frame_size_input, latent_frame_size, ranks_model, split_devices,
)
from .common import check_overlap, graph_check
from .continuation import PROMPT_SCHEDULE, LongVideoContinuationSampler
from .joins import window_joins, with_joins
from .sampler import CFG, SCHEDULER, SEED, STEPS


class LongVideoCoDenoiseSampler:
    DESCRIPTION = (
        "Makes a long video in one pass: every step denoises the whole video as overlapping windows of the model's "
        "length whose predictions are cross-faded (Gen-L-Video co-denoising, FreeNoise noise), so there is no window "
        "seam. layout_share runs the noisiest steps as one window spread over the whole video, so that neighbouring "
        "windows cannot settle on two places for an object (docs/coherence.md). Works with any model, no training; "
        "ComfyUI's models (LongVideoComfyModel) run the windows inside ComfyUI's own sampling. devices splits every "
        "step's windows over several GPUs. "
        "The video's latents stay on the CPU and one window at a time goes to the GPU, so GPU memory does not grow with "
        "length. Prompts along the timeline come from prompt_schedule (line i covers the i-th stretch of frames). "
        "Costs about frames_per_window / (frames_per_window - overlap) times the model calls of continuation."
    )
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The whole video's latents; decode with LongVideoDecode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model (optionally through LongVideoTemporalAttention)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt of the whole video, unless prompt_schedule is connected."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from (leave empty for the embedded model)."}),
                "width": frame_size_input("width"),
                "height": frame_size_input("height"),
                "frames": ("INT", {"default": 64, "min": 1, "max": 100000, "tooltip": "Frames of the video (latent frames), start frames included."}),
                "frames_per_window": ("INT", {"default": 16, "min": 2, "max": 1024,
                                              "tooltip": "Frames the model sees at once: its training length (16 for the embedded model and ModelScope, 24 for Zeroscope v2)."}),
                "overlap": ("INT", {"default": 8, "min": 0, "max": 1023,
                                    "tooltip": "Frames shared by neighbouring windows. More overlap ties windows more tightly and costs more model calls; half the window is a good start."}),
                "noise": (list(co_denoise.NOISE_KINDS), {"default": "freenoise",
                                                         "tooltip": "freenoise: later frames reuse the first window's noise in a shuffled order, which keeps one object; independent: fresh noise for every frame."}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "scheduler": SCHEDULER,
            },
            "optional": {
                "prompt_schedule": (PROMPT_SCHEDULE, {"tooltip": "Prompts along the timeline from LongVideoPromptSchedule: line i of m covers frames i*frames/m up to (i+1)*frames/m."}),
                "start_image": ("IMAGE", {"tooltip": "Start from this image (its last frame, resized to width x height): frame 0, kept exactly; needs vae."}),
                "vae": (VAE, {"tooltip": "Encodes start_image."}),
                "start_latent": ("LATENT", {"tooltip": "Continue this clip: its frames are the first frames, kept exactly."}),
                "method": (list(co_denoise.CO_DENOISE_METHODS), {"default": "replace",
                                                                 "tooltip": "How start frames are kept (only with start_image or start_latent): replace re-noises them every step (any model); learned lets a model that takes known frames read them (the embedded model)."}),
                "layout_share": ("FLOAT", {"default": co_denoise.LAYOUT_SHARE, "min": 0.0, "max": 1.0, "step": 0.05, "round": 0.01,
                                           "tooltip": (
                    "Share of the steps, the noisiest, in which the model sees one window of frames spread evenly over the "
                    "whole video (the other frames follow them in between), so that one window decides where things are "
                    "in the whole video; the later steps add the motion in ordinary windows. Without it (0) windows that "
                    "decide from their own noise can put the object in two places, and it jumps between them. 0.4 stops "
                    "the embedded model's jumps; its object then moves about half as fast, and the longer the video the "
                    "less it follows direction changes along the timeline (over 1,024 frames it drifts slowly). A layout "
                    "step runs one window, with the prompt of the video's middle, so it costs less than an ordinary step.")}),
                "devices": DEVICES,
                "positions": (list(co_denoise.POSITIONS), {"default": "relative", "tooltip": (
                    "ComfyUI's Wan models: where each window is in time for the model. relative: every window is a "
                    "clip of its own (frames 0 to frames_per_window - 1), as ComfyUI's context windows do. absolute: "
                    "its frames' place in the video as the window's rotary position offset; rotary positions depend "
                    "only on frame differences, so this changes nothing measurable (float rounding, docs/coherence.md). "
                    "Other models: relative only.")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames_per_window=None, overlap=None):
        def check(width, height, frames_per_window, overlap):
            check_frame_size(cls.__name__, width, height)
            check_overlap(cls.__name__, frames_per_window, overlap)

        return graph_check(cls, locals(), check)

    def sample(self, model, positive, negative, width, height, frames, frames_per_window, overlap, noise, seed, steps, cfg,
               scheduler, prompt_schedule=None, start_image=None, vae=None, start_latent=None, method="replace",
               layout_share=co_denoise.LAYOUT_SHARE, devices="", positions="relative"):
        check_numbers(self, locals())
        node = "LongVideoCoDenoiseSampler"
        check_frame_size(node, width, height, model)
        device_list = split_devices(node, devices)
        if start_image is not None and start_latent is not None:
            raise NodeInputError(f"{node}: connect start_image or start_latent, not both")
        settings = co_denoise.CoDenoiseSettings(frames, frames_per_window, overlap, noise, method, layout_share, positions)
        try:
            settings.check(model)
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        if getattr(model, "samples_itself", False) and method == "learned":
            raise NodeInputError(f"{node}: method 'learned' on {model.name}: a ComfyUI model's own image conditioning is "
                                 "made for one clip, not for windows; its start frames are kept with 'replace'")
        if model.requires_known_frames:
            raise NodeInputError(f"{node}: this model only works from known frames: use LongVideoContinuationSampler")
        if method == "learned" and not model.takes_known_frames:
            raise NodeInputError(f"{node}: method 'learned' needs a model that takes known frames (the embedded "
                                 "longvideo-shapes); this model is not one: choose 'replace'")
        start = LongVideoContinuationSampler._start(node, model, start_image, vae, start_latent, width, height)
        if start is not None and start.shape[2] >= frames:
            raise NodeInputError(f"{node}: the start has {start.shape[2]} frames; set frames above that so that new frames follow")
        negative_prompt = conditioning_prompt(negative, node, "negative", model)
        schedule = prompt_schedule if prompt_schedule is not None else [positive]
        lines = [conditioning_prompt(c, node, "prompt_schedule" if prompt_schedule else "positive", model) for c in schedule]
        prompts = [TextGuidance.from_prompts(line, negative_prompt, cfg) for line in lines]
        batch = 1 if start is None else start.shape[0]
        size = (batch, *latent_frame_size(model, width, height))
        check_fits(node, model, batch=batch, call_frames=frames_per_window, kept_frames=frames, copies=5, height=size[1],
                   width=size[2], change="lower frames, frames_per_window, width or height")
        with Progress(steps, "co-denoising") as progress:
            if device_list is not None:
                payload = {"model": ranks_model(node, model), "settings": vars(settings), "size": list(size), "steps": steps,
                           "seed": seed, "scheduler": scheduler, "start": start,
                           "prompts": [{"positive": rank_prompt_data(line), "negative": rank_prompt_data(negative_prompt),
                                        "cfg": cfg} for line in lines]}
                results = distributed_launch.run_ranks(device_list, "sampling.distributed_launch:co_denoise_job", payload,
                                                       on_step=lambda step, total: progress.update(),
                                                       check_cancel=throw_if_interrupted)
                latents = torch.from_numpy(results[0]["latents"])
            else:
                latents = co_denoise.co_denoise_video(
                    model, prompts, settings, size=size, steps=steps, seed=seed, scheduler=scheduler, start=start,
                    on_step=lambda step, total: progress.update(),
                )
        joins = window_joins(frames, frames_per_window, overlap)
        joins += [] if start is None else [start.shape[2]]
        return (with_joins({"samples": latents.to(intermediate_device())}, joins, start_latent=start_latent),)
