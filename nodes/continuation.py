import logging

import torch
import torch.nn.functional as F

from ..sampling import continuation
from ..sampling.denoise import TextGuidance
from ..utils.comfy import Progress, intermediate_device
from .common import (
    save_partial_latent,
    CONDITIONING, SAMPLING, CLIP, MODEL, VAE, NodeInputError, check_frame_size, conditioning_prompt, frame_size_input,
    latent_downscale, latent_frame_size, video_latents,
)
from .common import check_numbers
from .joins import continuation_joins, with_joins
from .sampler import CFG, SCHEDULER, SEED, STEPS

PROMPT_SCHEDULE = "LV_PROMPT_SCHEDULE"
PARTIAL_PREFIX = "LongVideo/continuation_partial"
log = logging.getLogger(__name__)


class LongVideoPromptSchedule:
    DESCRIPTION = "One prompt per line: chunk 1 uses the first line, chunk 2 the second, and the last line carries on."
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = (PROMPT_SCHEDULE,)
    RETURN_NAMES = ("prompt_schedule",)
    OUTPUT_TOOLTIPS = ("The prompts, one per line, for the continuation, hierarchical and distributed samplers.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (CLIP, {"tooltip": "The text encoder from LongVideoModelLoader."}),
                "text": ("STRING", {"multiline": True, "tooltip": "One prompt per line; empty lines are skipped."}),
            }
        }

    def encode(self, clip, text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise NodeInputError("LongVideoPromptSchedule: 'text' holds no prompt: write one prompt per line")
        tokens, pooled = clip.encode(lines)
        return ([[[tokens[i : i + 1], {"pooled_output": pooled[i : i + 1]}]] for i in range(len(lines))],)


class LongVideoContinuationSampler:
    DESCRIPTION = (
        "Makes a long video chunk after chunk, each chunk continuing from the last frames of the previous one "
        "(ContinuitySeq-style). Starts from text, an image (frame 0) or a latent clip. Every frame appears once: "
        "total = start frames + chunks x (frames_per_chunk - conditioning frames). If a chunk fails or is cancelled, "
        "the finished frames are saved as output/LongVideo/continuation_partial_*.latent."
    )
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The whole video latent: the start clip's frames (if any), then every new chunk.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The video model (optionally through LongVideoTemporalAttention)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt of every chunk, unless prompt_schedule is connected."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "width": frame_size_input("width"),
                "height": frame_size_input("height"),
                "frames_per_chunk": ("INT", {"default": 16, "min": 2, "max": 1024, "tooltip": "Frames sampled per chunk, conditioning frames included (ContinuitySeq's -T plus k: T=16, k=4 -> 20)."}),
                "chunks": ("INT", {"default": 4, "min": 1, "max": 10000, "tooltip": "How many chunks to add."}),
                "min_conditioning_frames": ("INT", {"default": 1, "min": 1, "max": 1023,
                                                    "tooltip": "Fewest frames carried over from the previous chunk (ContinuitySeq -CN)."}),
                "max_conditioning_frames": ("INT", {"default": 1, "min": 1, "max": 1023,
                                                    "tooltip": "Most frames carried over (-CX); each chunk draws a count in between from its seed."}),
                "method": (list(continuation.METHODS), {"default": "replace",
                                                        "tooltip": ("replace: re-noise the known frames each step (any model). guidance: reconstruction guidance (slower: a "
                                                                    "backward pass per step). learned: the model takes the frames itself (the embedded model, ContinuitySeq "
                                                                    "checkpoints; ComfyUI's Wan I2V, VACE, 2.2 TI2V, LTX-Video, HunyuanVideo I2V "
                                                                    "through their own image conditioning); the best seams where a model has it. resample: replace plus RePaint's resampling of the "
                                                                    "noisier half of the steps (any model, 2x the model calls), fewer seams than replace.")}),
                "seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "scheduler": SCHEDULER,
            },
            "optional": {
                "start_image": ("IMAGE", {"tooltip": "Start from this image (its last frame, resized to width x height); needs vae."}),
                "vae": (VAE, {"tooltip": "Encodes start_image."}),
                "start_latent": ("LATENT", {"tooltip": "Extend this clip: its frames come first."}),
                "prompt_schedule": (PROMPT_SCHEDULE, {"tooltip": "Per-chunk prompts from LongVideoPromptSchedule."}),
                "guidance_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "guidance method only (ignored by replace and learned): the strength of the reconstruction guidance."}),
                "anchor_colours": ("BOOLEAN", {"default": False, "tooltip": (
                    "Match every chunk's per-channel latent mean and spread to the first chunk's, in latent space before "
                    "decoding, against colour drift: it undoes drift in the latents' statistics (an injected offset "
                    "growing 0.3 a chunk: colour drift Delta E 6.3 -> 0.3) and leaves seams and an undrifted video as "
                    "they were (docs/report.md). Leave it off when the chunks should change colour (a new scene).")}),
            },
        }

    def sample(self, model, positive, negative, width, height, frames_per_chunk, chunks, min_conditioning_frames,
               max_conditioning_frames, method, seed, steps, cfg, scheduler, start_image=None, vae=None,
               start_latent=None, prompt_schedule=None, guidance_weight=1.0, anchor_colours=False):
        check_numbers(self, locals())
        node = "LongVideoContinuationSampler"
        check_frame_size(node, width, height, model)
        if start_image is not None and start_latent is not None:
            raise NodeInputError(f"{node}: connect start_image or start_latent, not both")
        settings = continuation.ContinuationSettings(
            frames_per_chunk, chunks, min_conditioning_frames, max_conditioning_frames, method, guidance_weight, anchor_colours
        )
        try:
            settings.check(model)
        except ValueError as error:
            raise NodeInputError(f"{node}: {error}") from None
        if method == "learned" and not model.takes_known_frames:
            raise NodeInputError(f"{node}: method 'learned' needs a model trained to take conditioning frames (a ContinuitySeq "
                                 "checkpoint or the embedded longvideo-shapes); this model is not one: choose 'replace' or 'guidance'")
        if model.requires_known_frames and method != "learned":
            raise NodeInputError(f"{node}: this model (ContinuitySeq) takes its conditioning frames itself: choose method 'learned'")
        if model.requires_known_frames and start_image is None and start_latent is None:
            raise NodeInputError(f"{node}: a ContinuitySeq model only continues frames: connect start_image (with vae) "
                                 "or start_latent")
        start = self._start(node, model, start_image, vae, start_latent, width, height)
        negative_prompt = conditioning_prompt(negative, node, "negative", model)
        schedule = prompt_schedule if prompt_schedule is not None else [positive]
        prompts = [TextGuidance.from_prompts(conditioning_prompt(c, node, "prompt_schedule" if prompt_schedule else "positive",
                                                                 model), negative_prompt, cfg) for c in schedule]
        batch = 1 if start is None else start.shape[0]
        with Progress(chunks * steps, "continuation") as progress:
            try:
                latents = continuation.continue_video(
                    model, prompts, settings, size=(batch, *latent_frame_size(model, width, height)), steps=steps, seed=seed,
                    scheduler=scheduler, start=start, on_step=lambda chunk, step: progress.update(),
                )
            except continuation.ChunksInterrupted as interrupted:
                if interrupted.latents is not None:
                    _save_partial(interrupted.latents)
                raise interrupted.cause
        start_frames = 0 if start is None else start.shape[2]
        joins, carried = continuation_joins(continuation.known_frame_counts(settings, seed, start_frames), frames_per_chunk,
                                            start_frames)
        return (with_joins({"samples": latents.to(intermediate_device())}, joins, carried=carried, start_latent=start_latent),)

    @staticmethod
    def _start(node, model, start_image, vae, start_latent, width, height):
        if start_latent is not None:
            start = video_latents(start_latent, node, "start_latent", model.latent_channels)
            if start.shape[3:] != latent_frame_size(model, width, height):
                downscale = latent_downscale(model)
                size = f"{start.shape[4] * downscale}x{start.shape[3] * downscale}"
                raise NodeInputError(f"{node}: start_latent is {size}; set width and height to match")
            return start
        if start_image is None:
            return None
        if vae is None:
            raise NodeInputError(f"{node}: start_image needs 'vae' to encode it: connect the VAE from LongVideoModelLoader")
        if start_image.dim() != 4 or start_image.shape[0] == 0:
            raise NodeInputError(f"{node}: start_image must be an IMAGE with at least one frame, got shape {tuple(start_image.shape)}")
        frame = start_image[-1:, ..., :3].permute(0, 3, 1, 2)
        frame = F.interpolate(frame, size=(height, width), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return vae.encode(frame.clamp(0, 1), 1)


def _save_partial(latents: torch.Tensor) -> None:
    path = save_partial_latent(latents, PARTIAL_PREFIX)
    log.warning("LongVideoContinuationSampler stopped; the %d finished frames are in %s", latents.shape[2], path)