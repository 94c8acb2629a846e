import math

import psutil
import torch

from ..sampling import flow_interpolation, interpolation
from ..sampling.denoise import TextGuidance
from ..sampling.frame_conditioning import BLEND_STRENGTH
from ..utils.comfy import Progress, intermediate_device
from .common import (
    SAMPLING, VIDEO, MODEL, NodeInputError, check_finite_frames, check_numbers, conditioning_prompt, video_latents,
)
from .joins import beside, every, with_joins
from .sampler import CFG, FRAME_GUIDANCE, SCHEDULER, SEED, STEPS

MAX_OUTPUT_FRAMES = 1_000_000


class LongVideoLatentInterpolate:
    DESCRIPTION = (
        "Diffusion frame interpolation in latent space (lxj616's 5 -> 17 -> 65): every pass turns N frames into "
        "(N - 1) x factor + 1, keeping the input frames exactly at multiples of factor and sampling the frames between "
        "them with the inputs as known frames. Long inputs are sampled in overlapping windows, one on the GPU at a time."
    )
    CATEGORY = SAMPLING
    FUNCTION = "interpolate"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The interpolated video latent: (frames - 1) x factor^passes + 1 frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model: any UNet3D (methods replace, guidance) or a hint-channel interpolation UNet (learned)."}),
                "positive": ("CONDITIONING", {"tooltip": "What the video shows."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "samples": ("LATENT", {"tooltip": "The frames to interpolate between (at least 2)."}),
                "factor": ("INT", {"default": 4, "min": 2, "max": 64, "tooltip": "Output frames per input gap: 4 makes 5 frames 17."}),
                "passes": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": "Interpolate this many times: 5 frames, factor 4, 2 passes -> 65."}),
                "method": (list(interpolation.METHODS), {"default": "replace",
                                                         "tooltip": ("replace: re-noise the known frames every step (any model). guidance: reconstruction guidance "
                                                                     "(slower). learned: the model takes them itself (the embedded model, lxj616's hint-channel "
                                                                     "interpolation UNets; ComfyUI's VACE and LTX-Video, and Wan first-last-frame models "
                                                                     "with window 2). resample: replace plus RePaint's resampling of the noisier half of the "
                                                                     "steps (any model, 2x the model calls). blend: the new frames start "
                                                                     "from the keyframes mixed along time and only the last half of the steps "
                                                                     "runs (any model, training-free, few seams).")}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": ("FLOAT", {**CFG[1], "tooltip": (
                    "Classifier-free guidance scale of this pass; 1 or less skips the negative pass. The input frames already "
                    "carry the content, so a lower CFG than the keyframes' (about 3 with the embedded model) lets the new "
                    "frames follow them and join them smoothly.")}),
                "scheduler": SCHEDULER,
                "attention_window": ("INT", {"default": 17, "min": 0, "max": 1025,
                                             "tooltip": "Sliding-window temporal attention (frames each frame sees) when a window samples more frames than this; 0 keeps the model's own attention. lxj616's interpolation model used 5."}),
                "window": ("INT", {"default": 17, "min": 2, "max": 4096,
                                   "tooltip": "Input frames sampled together; longer inputs go in overlapping windows (memory stays bounded)."}),
                "overlap": ("INT", {"default": 4, "min": 1, "max": 4095,
                                    "tooltip": "Input frames neighbouring windows share; seams always fall on input frames."}),
            },
            "optional": {
                "guidance_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "guidance method only (ignored by replace and learned): the strength of the reconstruction guidance."}),
                "blend_strength": ("FLOAT", {"default": BLEND_STRENGTH, "min": 0.05, "max": 1.0, "step": 0.05, "tooltip": (
                    "blend method only: the share of the steps run from the blended known frames. Lower keeps the blend's layout "
                    "(fewest seams where keyframes are close in time); higher lets the model change more (fast motion).")}),
                "frame_guidance": FRAME_GUIDANCE,
            },
        }

    def interpolate(self, model, positive, negative, samples, factor, passes, method, seed, steps, cfg, scheduler,
                    attention_window=17, window=17, overlap=4, guidance_weight=1.0, blend_strength=BLEND_STRENGTH,
                    frame_guidance=1.0):
        check_numbers(self, locals())
        node = "LongVideoLatentInterpolate"
        latents = video_latents(samples, node, "samples", model.latent_channels)
        if latents.shape[2] < 2:
            raise NodeInputError(f"{node}: 'samples' has {latents.shape[2]} frame; interpolation needs at least 2")
        settings = interpolation.InterpolationSettings(factor, passes, method, guidance_weight, window, overlap, attention_window,
                                                       blend_strength, frame_guidance)
        try:
            settings.check(model)
            interpolation.check_model(model, latents.shape[2], settings)
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        if method == "learned" and not model.takes_known_frames:
            raise NodeInputError(f"{node}: method 'learned' needs a model that takes known frames (UNet3D with "
                                 "in_channels = 2 x latent channels + 1: a hint-channel interpolation UNet or the embedded "
                                 "longvideo-shapes); this model is not one: choose 'replace' or 'guidance'")
        if method != "learned" and model.requires_known_frames:
            raise NodeInputError(f"{node}: this model takes its known frames itself (hint channels): choose method 'learned'")
        total = interpolation.output_frames(latents.shape[2], factor, passes)
        if total > MAX_OUTPUT_FRAMES:
            raise NodeInputError(f"{node}: {latents.shape[2]} frames, factor {factor}, {passes} passes make {total} frames: "
                                 "lower passes or factor")
        guidance = TextGuidance.from_prompts(conditioning_prompt(positive, node, "positive", model),
                                             conditioning_prompt(negative, node, "negative", model), cfg)
        with Progress(interpolation.count_model_runs(latents.shape[2], settings) * steps, "interpolation") as progress:
            out = interpolation.interpolate_latents(
                model, guidance, latents, settings, steps=steps, seed=seed, scheduler=scheduler,
                on_step=lambda pass_index, window_index, step: progress.update(),
            )
        known = every(factor, out.shape[2])  # the frames the last pass kept: every factor-th
        return (with_joins({"samples": out.to(intermediate_device())}, beside(known, out.shape[2]), known),)


class LongVideoFlowInterpolate:
    DESCRIPTION = (
        "Pixel-space frame interpolation with OpenCV dense optical flow in both directions and occlusion-aware "
        "blending (dis, farneback), or plain cross-fading (linear). N frames become (N - 1) x factor + 1; the input "
        "frames stay unchanged at multiples of factor. No model needed; runs on the CPU."
    )
    CATEGORY = VIDEO
    FUNCTION = "interpolate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The interpolated frames: (frames - 1) x factor + 1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames [frames, height, width, 3] to interpolate between (at least 2)."}),
                "factor": ("INT", {"default": 4, "min": 2, "max": 256, "tooltip": "Output frames per input gap: 4 makes 5 frames 17."}),
                "method": (list(flow_interpolation.METHODS), {"default": "dis",
                                                              "tooltip": "dis: fast dense inverse-search flow. farneback: polynomial-expansion flow (slower, smoother). linear: cross-fade, no motion."}),
            }
        }

    def interpolate(self, images, factor, method):
        check_numbers(self, locals())
        node = "LongVideoFlowInterpolate"
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] < 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise NodeInputError(f"{node}: 'images' must be an IMAGE [frames, height, width, 3], got {shape}")
        if images.shape[0] < 2:
            raise NodeInputError(f"{node}: 'images' has {images.shape[0]} frame; interpolation needs at least 2")
        check_finite_frames(node, "images", images, frame_dim=0)
        if factor < 2:
            raise NodeInputError(f"{node}: factor must be at least 2, got {factor}")
        if method not in flow_interpolation.METHODS:
            raise NodeInputError(f"{node}: method '{method}' is unknown: choose one of {', '.join(flow_interpolation.METHODS)}")
        frames, height, width, channels = images.shape
        shape = (flow_interpolation.interpolated_frame_count(frames, factor), height, width, channels)
        needed, available = 4 * math.prod(shape), psutil.virtual_memory().available
        if needed > 0.9 * available:
            raise NodeInputError(
                f"{node}: {shape[0]} frames of {width}x{height} need {needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB "
                "is free: lower factor, or interpolate the video in parts (e.g. split it with ImageFromBatch)"
            )
        out = torch.empty(shape, dtype=torch.float32)
        with Progress(frames - 1, "flow interpolation") as progress:
            flow_interpolation.interpolate_frames(images, factor, method, out=out, on_pair=lambda pair: progress.update())
        return (out.to(intermediate_device()),)
