"""Last-frame continuation: chunk after chunk, each conditioned on the last k frames made so far.

Every chunk is one run of the denoising loop over `frames_per_chunk` frames whose first k frames are known
(the last k frames of the video so far) and honoured by a frame-conditioning method. The video keeps every
frame once: a chunk adds its frames_per_chunk - k new frames. Starting from nothing, the first chunk has no
known frames; starting from an image, the image is frame 0; starting from a clip, the clip comes first.

    total frames = start frames + sum over chunks of (frames_per_chunk - k_c),   k_c = min(k drawn, frames so far)

Chunk c draws k in [min_known, max_known] and its noise from a seed derived from (seed, c), so a run with
more chunks starts with exactly the frames of a run with fewer. Only the chunk being sampled is on the
device; finished frames wait on the CPU.
"""

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoise import TextGuidance, denoise
from .frame_conditioning import METHODS as CONDITIONING_METHODS
from .frame_conditioning import KnownFrames, check_model_takes, make_conditioning

# blend starts new frames from a mix of known frames on both sides: a chunk has them on one side only.
METHODS = tuple(m for m in CONDITIONING_METHODS if m != "blend")
# Latent frames before a chunk's known frames handed to the executor as their context: an executor that decodes the
# known frames (learned on ComfyUI's models) decodes them as the video's own frames, not as a video's first frames.
CONTEXT_FRAMES = 2


@dataclass
class ContinuationSettings:
    frames_per_chunk: int
    chunks: int
    min_known: int = 1
    max_known: int = 1
    method: str = "replace"
    guidance_weight: float = 1.0
    anchor_colours: bool = False

    def check(self, denoiser=None) -> None:
        """`denoiser`, when given, is the model the settings will run: a method it cannot honour is refused here."""
        if self.chunks < 1:
            raise ValueError(f"chunks must be at least 1, got {self.chunks}")
        if not 1 <= self.min_known <= self.max_known:
            raise ValueError(f"conditioning frames need 1 <= min ({self.min_known}) <= max ({self.max_known})")
        if self.max_known >= self.frames_per_chunk:
            raise ValueError(
                f"frames_per_chunk ({self.frames_per_chunk}) must exceed the conditioning frames ({self.max_known}) "
                "so that every chunk adds new frames"
            )
        if self.method == "blend":
            raise ValueError("method 'blend' needs known frames on both sides of the new ones (infill, interpolation); "
                             f"a chunk has them on one side: choose one of {', '.join(METHODS)}")
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is unknown: choose one of {', '.join(METHODS)}")
        check_model_takes(denoiser, self.method, [(list(range(k)), self.frames_per_chunk)
                                                  for k in range(1, self.max_known + 1)])


@dataclass
class Resume:
    """Where an interrupted run stopped: `start` of `continue_video` then holds its finished frames (its own start clip
    first), `chunks_done` chunks of it are finished, `start_frames` is the frame count of the start clip it was given,
    `reference` the colour statistics of its first chunk (anchor_colours). Carrying on gives the frames the
    uninterrupted run would have made, bit for bit: chunk c still draws from (seed, c) and takes prompt c."""

    chunks_done: int
    start_frames: int
    reference: tuple[torch.Tensor, torch.Tensor] | None = None


class ChunksInterrupted(Exception):
    """Raised from `continue_video` when a chunk fails or is cancelled; `latents` holds the frames finished so far and
    `resume` how to carry on from them."""

    def __init__(self, latents: torch.Tensor | None, cause: BaseException, resume: Resume | None = None):
        super().__init__(str(cause))
        self.latents = latents
        self.cause = cause
        self.resume = resume


def chunk_seed(seed: int, chunk: int) -> int:
    digest = hashlib.sha256(f"longvideo-continuation:{seed}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def known_frame_counts(settings: ContinuationSettings, seed: int, start_frames: int) -> list[int]:
    """k for every chunk (0 for a first chunk with nothing before it)."""
    counts, made = [], start_frames
    for chunk in range(settings.chunks):
        drawn = random.Random(chunk_seed(seed, chunk)).randint(settings.min_known, settings.max_known)
        k = min(drawn, made)
        counts.append(k)
        made += settings.frames_per_chunk - k
    return counts


def continue_video(
    denoiser,
    prompts: list[TextGuidance],
    settings: ContinuationSettings,
    *,
    size: tuple[int, int, int],
    steps: int,
    seed: int,
    scheduler: str = "ddim",
    start: torch.Tensor | None = None,
    resume: Resume | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[Resume, list[torch.Tensor]], None] | None = None,
) -> torch.Tensor:
    """Latents [B, C, total, H, W] on the CPU. `size` is (batch, height, width) of the latents, `start` an optional
    clip [B or 1, C, T, H, W] to continue, chunk c uses prompts[min(c, len(prompts) - 1)]. `on_step(chunk, step)`
    runs after every step. A failure or cancel raises ChunksInterrupted carrying the finished frames. A chunk's prompt is
    cut to the chunk's frames of the whole video (TextGuidance.for_frames: e.g. WanImageToVideo's concat latents).
    `resume` carries on an interrupted run whose finished frames are `start` (ChunksInterrupted.resume). `on_chunk(resume,
    parts)` runs after every chunk with the parts made so far (their concatenation is the video so far)."""
    settings.check(denoiser)
    batch, height, width = size
    channels = denoiser.latent_channels
    given = 0 if start is None else start.shape[2]
    start_frames = given if resume is None else resume.start_frames
    parts = [] if start is None else [start.float().cpu().expand(batch, -1, -1, -1, -1)]
    reference = None if resume is None else resume.reference
    counts = known_frame_counts(settings, seed, start_frames)
    first = 0 if resume is None else resume.chunks_done
    made = start_frames + sum(settings.frames_per_chunk - k for k in counts[:first])
    if made != given or first > len(counts):
        raise ValueError(f"the run to resume made {made} frames in {first} chunks, but {given} are given: resume it "
                         "with the settings it ran with")
    total = start_frames + sum(settings.frames_per_chunk - k for k in counts)
    for chunk, k in enumerate(counts[first:], start=first):
        conditioning = None
        if k:
            # The last k + CONTEXT_FRAMES parts hold the frames needed: every part holds at least one frame.
            recent = torch.cat(parts[-k - CONTEXT_FRAMES :], dim=2)
            known = KnownFrames(list(range(k)), recent[:, :, -k:], context=recent[:, :, -k - CONTEXT_FRAMES : -k])
            conditioning = make_conditioning(settings.method, known, settings.guidance_weight, denoiser.prediction_type)
        try:
            guidance = prompts[min(chunk, len(prompts) - 1)].for_frames(range(made - k, made - k + settings.frames_per_chunk), total)
            latents = denoise(
                denoiser, guidance, (batch, channels, settings.frames_per_chunk, height, width),
                steps=steps, seed=chunk_seed(seed, chunk), scheduler=scheduler, conditioning=conditioning,
                callback=None if on_step is None else (lambda step, total, _, c=chunk: on_step(c, step)),
            )
        except BaseException as error:
            finished = Resume(chunk, start_frames, reference)
            raise ChunksInterrupted(torch.cat(parts, dim=2) if parts else None, error, finished) from error
        new = latents[:, :, k:]
        if settings.anchor_colours:
            reference = reference if reference is not None else _channel_statistics(new)
            new = _match_statistics(new, reference)
        parts.append(new)
        made += new.shape[2]
        if on_chunk is not None:
            on_chunk(Resume(chunk + 1, start_frames, reference), list(parts))
    return torch.cat(parts, dim=2)


def _channel_statistics(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = (0, 2, 3, 4)
    return latents.mean(dim=dims, keepdim=True), latents.std(dim=dims, keepdim=True)


def _match_statistics(latents: torch.Tensor, reference) -> torch.Tensor:
    """Give each channel the first chunk's mean and spread: stops colours drifting chunk after chunk."""
    mean, std = _channel_statistics(latents)
    return (latents - mean) / std.clamp(min=1e-6) * reference[1] + reference[0]
