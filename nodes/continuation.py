import logging
import time

import torch
import torch.nn.functional as F

from ..sampling import continuation
from ..sampling.denoise import TextGuidance
from ..utils.comfy import Progress, intermediate_device
from ..utils.stop_keepers import already_kept, kept_on_stop
from .common import (
    LATENT_INFO, MadeOnDemand, save_partial_latent,
    CONDITIONING, SAMPLING, CLIP, MODEL, VAE, NodeInputError, check_frame_size, conditioning_prompt, frame_size_input,
    check_fits, latent_downscale, latent_frame_size, model_fingerprint, partial_prefix, video_latents,
)
from .common import graph_check
from .common import check_numbers
from .joins import continuation_joins, latent_joins, with_joins
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
        return (MadeOnDemand(len(lines), lambda i: _encoded(clip, lines[i])),)


def _encoded(clip, line: str):
    tokens, pooled = clip.encode([line])
    return [[tokens, {"pooled_output": pooled}]]


class LongVideoContinuationSampler:
    DESCRIPTION = (
        "Makes a long video chunk after chunk, each chunk continuing from the last frames of the previous one "
        "(ContinuitySeq-style). Starts from text, an image (frame 0) or a latent clip. Every frame appears once: "
        "total = start frames + chunks x (frames_per_chunk - conditioning frames). If a chunk fails or is cancelled, "
        "the finished frames are saved as <the Save node's prefix>_partial_*.latent (LongVideo/continuation_partial without "
        "one); LongVideoLoadLatent -> start_latent with the same settings carries on to the video the uninterrupted run "
        "would have made."
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
                "resume": ("BOOLEAN", {"default": True, "tooltip": (
                    "When start_latent is the partial of an interrupted continuation (LongVideoLoadLatent of a "
                    "*_partial_*.latent), carry on from its next chunk: with the settings it ran with, the result is "
                    "the video the uninterrupted run would have made, bit for bit (other settings are refused by "
                    "name). Off: extend it as a plain clip.")}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames_per_chunk=None, min_conditioning_frames=None,
                        max_conditioning_frames=None):
        return graph_check(cls, locals(), _check_chunk_settings)

    def sample(self, model, positive, negative, width, height, frames_per_chunk, chunks, min_conditioning_frames,
               max_conditioning_frames, method, seed, steps, cfg, scheduler, start_image=None, vae=None,
               start_latent=None, prompt_schedule=None, guidance_weight=1.0, anchor_colours=False, resume=True,
               prompt=None, unique_id=None):
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
        run = {"seed": seed, "frames_per_chunk": frames_per_chunk, "min_conditioning_frames": min_conditioning_frames,
               "max_conditioning_frames": max_conditioning_frames, "method": method, "steps": steps, "cfg": cfg,
               "scheduler": scheduler, "guidance_weight": guidance_weight, "anchor_colours": anchor_colours,
               "model": model_fingerprint(model)}
        resume_point, original_start = _resume_point(node, start_latent, run, chunks) if resume else (None, start_latent)
        negative_prompt = conditioning_prompt(negative, node, "negative", model)
        schedule = prompt_schedule if prompt_schedule is not None else [positive]
        name = "prompt_schedule" if prompt_schedule is not None else "positive"
        prompts = MadeOnDemand(len(schedule), lambda i: TextGuidance.from_prompts(
            conditioning_prompt(schedule[i], node, name, model), negative_prompt, cfg))
        prompts[0]  # the first line checked now; a chunk's line is encoded when the chunk starts
        batch = 1 if start is None else start.shape[0]
        done = 0 if resume_point is None else resume_point.chunks_done
        if resume_point is not None:
            start_frames = resume_point.start_frames  # the partial begins with the clip its run started from
        else:
            start_frames = 0 if start is None else start.shape[2]
        counts = continuation.known_frame_counts(settings, seed, start_frames)
        latent_height, latent_width = latent_frame_size(model, width, height)
        check_fits(node, model, batch=batch, call_frames=frames_per_chunk, kept_frames=start_frames + sum(frames_per_chunk - k for k in counts),
                   copies=2, height=latent_height, width=latent_width, change="lower chunks, frames_per_chunk, width or height")
        prefix = partial_prefix(prompt, unique_id, PARTIAL_PREFIX)
        finished = {}

        def keep():  # the watchdog's save, when a stop finds the main thread inside one long model call
            if not finished:
                return None
            return _save_partial(torch.cat(finished["parts"], dim=2), finished["resume"], run, original_start, settings, prefix)

        with Progress((chunks - done) * steps, "continuation") as progress, kept_on_stop(keep):
            try:
                latents = continuation.continue_video(
                    model, prompts, settings, size=(batch, latent_height, latent_width), steps=steps, seed=seed,
                    scheduler=scheduler, start=start, resume=resume_point,
                    on_step=_with_time_left(node, progress, done, chunks),
                    on_chunk=lambda resume, parts: finished.update(resume=resume, parts=parts),
                )
            except continuation.ChunksInterrupted as interrupted:
                if interrupted.latents is not None and not already_kept():
                    _save_partial(interrupted.latents, interrupted.resume, run, original_start, settings, prefix)
                raise interrupted.cause
        joins, carried = continuation_joins(counts, frames_per_chunk, start_frames)
        result = {"samples": latents.to(intermediate_device())}
        return (with_joins(result, joins, carried=carried, start_latent=original_start),)

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


def _check_chunk_settings(width, height, frames_per_chunk, min_conditioning_frames, max_conditioning_frames) -> None:
    node = "LongVideoContinuationSampler"
    check_frame_size(node, width, height)
    low, high = min_conditioning_frames, max_conditioning_frames
    if low is not None and high is not None and low > high:
        raise NodeInputError(f"{node}: min_conditioning_frames ({low}) is above max_conditioning_frames ({high}): "
                             f"set min to at most {high}")
    if high is not None and frames_per_chunk is not None and high >= frames_per_chunk:
        raise NodeInputError(f"{node}: frames_per_chunk ({frames_per_chunk}) must exceed max_conditioning_frames ({high}) "
                             f"so that every chunk adds new frames: set frames_per_chunk to at least {high + 1}")


def _with_time_left(node: str, progress, first: int, chunks: int):
    """The sampler's on_step: the progress bar, and once the first chunk is done, a log line with the time left."""
    started, told = time.perf_counter(), []

    def on_step(chunk, step):
        progress.update()
        if chunk == first + 1 and not told:
            told.append(True)
            each = time.perf_counter() - started
            left = each * (chunks - chunk)
            log.info("%s: chunk %d took %.0f s; about %s left for the other %d chunks", node, first + 1, each,
                     _duration(left), chunks - chunk)

    return on_step


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# The settings a partial must be resumed with, as the message names them.
RESUME_SETTINGS = ("seed", "frames_per_chunk", "min_conditioning_frames", "max_conditioning_frames", "method", "steps",
                   "cfg", "scheduler", "guidance_weight", "anchor_colours", "model")


def _save_partial(latents, resume, run: dict, start_latent, settings, prefix: str) -> str | None:
    """Keep the finished frames with what resuming them needs: the run's settings, the chunks done, the start clip's
    size and joins, the colour reference. Returns the file's path."""
    counts = continuation.known_frame_counts(settings, run["seed"], resume.start_frames)[: resume.chunks_done]
    joins, carried = continuation_joins(counts, settings.frames_per_chunk, resume.start_frames)
    facts = with_joins({"samples": latents}, joins, carried=carried, start_latent=start_latent)
    start = latent_joins(start_latent) if start_latent is not None else None
    reference = None if resume.reference is None else [r.flatten().tolist() for r in resume.reference]
    info = {**facts[LATENT_INFO], "resume": {
        "sampler": "continuation", **run, "chunks_done": resume.chunks_done, "start_frames": resume.start_frames,
        "start_joins": start, "reference": reference}}
    path = save_partial_latent(latents, prefix, info)
    log.warning("LongVideoContinuationSampler stopped after %d finished chunks; the %d finished frames are in %s. To carry "
                "on, with the same settings: LongVideoLoadLatent of it into start_latent (headless: run_workflow.py "
                "WORKFLOW --resume %s)", resume.chunks_done, latents.shape[2], path, path)
    return path


def _resume_point(node: str, start_latent, run: dict, chunks: int):
    """(continuation.Resume, the clip the interrupted run started from as a LATENT or None) when `start_latent` is a
    continuation's partial, whose settings must be this run's; else (None, start_latent)."""
    facts = (start_latent.get(LATENT_INFO) or {}).get("resume") if isinstance(start_latent, dict) else None
    if not isinstance(facts, dict) or facts.get("sampler") != "continuation":
        return None, start_latent
    differ = [f"{name} {facts.get(name)!r} (this run: {run[name]!r})" for name in RESUME_SETTINGS
              if facts.get(name) != run[name]]
    if differ:
        what = "another model" if [d for d in differ if d.startswith("model ")] else ""
        raise NodeInputError(
            f"{node}: start_latent is the partial of a continuation that ran with {', '.join(differ)}: set them as "
            f"they were to carry it on{' (connect the model it ran with)' if what else ''}, or set resume to false to "
            "extend it as a new clip")
    done = int(facts["chunks_done"])
    if chunks <= done:
        raise NodeInputError(f"{node}: start_latent is a partial with {done} of its chunks finished: set chunks above "
                             f"{done} (the run it came from asked for more) to carry it on")
    samples = start_latent["samples"]
    reference = None
    if facts.get("reference") is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1, 1) for v in facts["reference"])
        reference = (mean, std)
    start_frames = int(facts["start_frames"])
    original = None
    if start_frames:
        original = {"samples": samples[:, :, :start_frames]}
        if facts.get("start_joins"):
            original[LATENT_INFO] = dict(facts["start_joins"])
    log.info("%s: carrying on the partial at chunk %d of %d", node, done + 1, chunks)
    return continuation.Resume(done, start_frames, reference), original