"""Hierarchical keyframes + infill (NUWA-XL's "diffusion over diffusion"): a planner and a sampler.

Level 0 (the global pass) samples L keyframes. Every next level fills each adjacent pair of the frames made so far
with L - 2 new frames: one run of L frames whose first and last frames are the pair, known to the frame
conditioning (replace, guidance, or learned with InfiNet). Only the middle frames are kept, so every parent frame
stays exactly as it was. With depth m (levels 0 .. m-1):

    frames N(m) = (L - 1)**m + 1                 level j runs (L - 1)**j segments (the k-th level, (L-1)**(k-1))
    level j's frames sit at the multiples of (L - 1)**(m - 1 - j) in the final video

The segments of a level are independent, so they are sampled side by side in batches of up to `batch_cap`. Segment
s of level j draws its noise from its own seed, derived from (seed, j, s), and the loop gives every batch item its
own generator, so a segment comes out the same alone or in any batch: batch caps only change speed.

Prompts: `prompts[j]` is level j's list, spread evenly over its segments (segment s of S takes entry
floor(s * P / S) of P); `timeline_prompts` and `level_prompts` build these lists from one list of lines.
"""

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoise import Prompt, TextGuidance, denoise
from .distributed import rank_share
from .frame_conditioning import (BLEND_STRENGTH, METHODS, KnownFrames, check_blend_strength, check_frame_guidance,
                                 check_model_takes, make_conditioning)


@dataclass(frozen=True)
class HierarchyPlan:
    """The frame arithmetic of L keyframes per run and `depth` levels."""

    keyframes: int
    depth: int

    def check(self) -> None:
        if self.keyframes < 3:
            raise ValueError(f"keyframes per run must be at least 3 (two endpoints and a frame between), got {self.keyframes}")
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")

    @property
    def frames(self) -> int:
        return frames_at_depth(self.keyframes, self.depth)

    def segments(self, level: int) -> int:
        return (self.keyframes - 1) ** level

    def stride(self, level: int) -> int:
        """Distance in the final video between neighbouring frames of one level's runs."""
        return (self.keyframes - 1) ** (self.depth - 1 - level)

    def segment_frames(self, level: int, segment: int) -> list[int]:
        """Final-video indices of the L frames of a run (first and last are the parents for level > 0)."""
        stride = self.stride(level)
        start = segment * (self.keyframes - 1) * stride
        return [start + i * stride for i in range(self.keyframes)]

    def level_frames(self, level: int) -> list[int]:
        """Final-video indices of every frame that exists once `level` is done."""
        return list(range(0, self.frames, self.stride(level)))

    def runs(self, batch_cap: int, first_level: int = 0, rank: int = 0, world_size: int = 1) -> int:
        """Sequential denoising runs (of rank `rank` of `world_size`): sum over levels of ceil(its segments / batch_cap)."""
        return sum(math.ceil(len(rank_share(self.segments(level), rank, world_size)) / batch_cap)
                   for level in range(first_level, self.depth))

    def level_of_start(self, frames: int) -> int:
        """How many levels a start clip of `frames` frames already holds (it must be N(j) for some 1 <= j <= depth)."""
        for levels in range(1, self.depth + 1):
            if frames_at_depth(self.keyframes, levels) == frames:
                return levels
        sizes = ", ".join(str(frames_at_depth(self.keyframes, j)) for j in range(1, self.depth + 1))
        raise ValueError(f"a start clip of {frames} frames is no level of this hierarchy: it needs one of {sizes} frames")


def frames_at_depth(keyframes: int, depth: int) -> int:
    return (keyframes - 1) ** depth + 1


def segment_seed(seed: int, level: int, segment: int) -> int:
    digest = hashlib.sha256(f"longvideo-hierarchy:{seed}:{level}:{segment}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def spread(items: list, count: int) -> list:
    """`count` picks from `items` spread evenly: pick s is items[floor(s * len(items) / count)]."""
    return [items[s * len(items) // count] for s in range(count)]


def timeline_prompts(plan: HierarchyPlan, lines: list) -> list[list]:
    """One list spread over the timeline: the video is cut into len(lines) equal spans and every run takes the line
    whose span holds its middle (the global pass, whose middle is the video's, takes the middle line)."""
    last = plan.frames - 1
    per_level = []
    for level in range(plan.depth):
        runs = [plan.segment_frames(level, s) for s in range(plan.segments(level))]
        per_level.append([lines[min(len(lines) - 1, int(len(lines) * (run[0] + run[-1]) / 2 / last))] for run in runs])
    return per_level


def level_prompts(plan: HierarchyPlan, lines: list) -> list[list]:
    """One line per level: line j for every run of level j; levels past the last line take the last line."""
    return [[lines[min(level, len(lines) - 1)]] for level in range(plan.depth)]


class LevelsInterrupted(Exception):
    """Raised when a level fails or is cancelled; `latents` is the video of the finished levels (None if none)."""

    def __init__(self, latents: torch.Tensor | None, cause: BaseException):
        super().__init__(str(cause))
        self.latents = latents
        self.cause = cause


@dataclass
class HierarchySettings:
    batch_cap: int = 8
    method: str = "replace"
    guidance_weight: float = 1.0
    blend_strength: float = BLEND_STRENGTH
    # CFG of the levels after the keyframes (None: the keyframes' cfg). Their runs see their two endpoint frames, which
    # already carry the content; a lower CFG lets the new frames follow them instead of the prompt's most typical drawing.
    infill_cfg: float | None = None
    frame_guidance: float = 1.0  # learned only: the known frames' own guidance scale (frame_conditioning.py)

    def check(self, denoiser=None, plan: HierarchyPlan | None = None) -> None:
        """`denoiser`, when given, is the model the settings will run: frame guidance other than 1 needs one that also
        samples without known frames, and a method it cannot honour on `plan`'s infill runs is refused."""
        check_blend_strength(self.blend_strength)
        check_frame_guidance(self.frame_guidance, denoiser if self.method == "learned" else None)
        if self.infill_cfg is not None and not self.infill_cfg >= 0:
            raise ValueError(f"infill cfg must be at least 0, got {self.infill_cfg}")
        if self.batch_cap < 1:
            raise ValueError(f"batch cap must be at least 1, got {self.batch_cap}")
        if self.method not in METHODS:
            raise ValueError(f"method '{self.method}' is unknown: choose one of {', '.join(METHODS)}")
        if plan is not None:
            infill = [([0, plan.keyframes - 1], plan.keyframes)] if plan.depth > 1 else []
            check_model_takes(denoiser, self.method, infill, self.frame_guidance)


def sample_hierarchy(
    denoiser,
    plan: HierarchyPlan,
    prompts: list[list[torch.Tensor | Prompt]],
    negative: torch.Tensor | Prompt | None,
    cfg: float,
    settings: HierarchySettings,
    *,
    size: tuple[int, int],
    steps: int,
    seed: int,
    scheduler: str = "ddim",
    start: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
    infill_denoiser=None,
    comm=None,
    on_level: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Latents [1, C, plan.frames, H, W] (float32, CPU) of one video.

    `infill_denoiser`, when given, samples the levels after the keyframes (e.g. an image-to-video model taking the two
    parents through its own conditioning while `denoiser`, a text-to-video model, makes the keyframes); the settings'
    frame conditioning applies to it.

    prompts[j]: level j's token embeddings [1, tokens, width] (or Prompts, which may carry a model's own conditioning,
    cut to every run's frames), spread over its segments. `size` is the latent
    (height, width). `start` [1, C, N(j), H, W] holds levels already made (e.g. a partial result): sampling goes on
    from level j. `on_step(level, step)` runs after every model step, `on_level(level, video)` after every finished
    level with the frames made so far. A failure or cancel raises LevelsInterrupted carrying the video of the finished
    levels.

    `comm` (a Communicator, sampling/distributed.py) splits every level over its ranks: each rank samples its share of
    the segments (rank_share) and the new frames are gathered, so every rank holds the whole video after every level.
    A segment draws the same noise whichever rank samples it, so the video is the one-process video.
    """
    plan.check()
    infill = denoiser if infill_denoiser is None else infill_denoiser
    settings.check(infill, plan)
    if len(prompts) < plan.depth or any(not level for level in prompts[: plan.depth]):
        raise ValueError(f"prompts must hold a non-empty list for each of the {plan.depth} levels")
    height, width = size
    video = torch.zeros(1, denoiser.latent_channels, plan.frames, height, width)
    first_level = 0
    if start is not None:
        first_level = plan.level_of_start(start.shape[2])
        video[:, :, plan.level_frames(first_level - 1)] = start.float().cpu()

    for level in range(first_level, plan.depth):
        segments = plan.segments(level)
        level_lines = spread(prompts[level], segments)
        mine = range(segments) if comm is None else rank_share(segments, comm.rank, comm.world_size)
        try:
            for first in range(mine.start, mine.stop, settings.batch_cap):
                batch = list(range(first, min(first + settings.batch_cap, mine.stop)))
                _sample_batch(infill if level > 0 else denoiser, plan, video, level, batch,
                              [level_lines[s] for s in batch], negative, cfg, settings, steps, seed, scheduler, on_step)
            if comm is not None and comm.world_size > 1:
                _gather_level(comm, plan, video, level)
        except BaseException as error:
            finished = video[:, :, plan.level_frames(level - 1)] if level > 0 else None
            raise LevelsInterrupted(finished, error) from error
        if on_level is not None:
            on_level(level, video[:, :, plan.level_frames(level)])
    return video


def _gather_level(comm, plan: HierarchyPlan, video: torch.Tensor, level: int) -> None:
    """Every rank's new frames of `level` into every rank's `video` (blocks padded to the largest rank's share)."""
    segments = plan.segments(level)
    new = slice(1, -1) if level > 0 else slice(None)
    share = [rank_share(segments, rank, comm.world_size) for rank in range(comm.world_size)]
    widest = max(len(block) for block in share)
    frames = len(plan.segment_frames(level, 0)[new])
    mine = torch.zeros(widest, video.shape[1], frames, *video.shape[3:])
    for item, segment in enumerate(share[comm.rank]):
        mine[item] = video[0, :, plan.segment_frames(level, segment)[new]]
    for rank, block in enumerate(comm.all_gather(mine)):
        for item, segment in enumerate(share[rank]):
            video[0, :, plan.segment_frames(level, segment)[new]] = block[item].cpu()


def _sample_batch(denoiser, plan, video, level, batch, lines, negative, cfg, settings, steps, seed, scheduler, on_step):
    """Sample the runs of `batch` (segment numbers of `level`) side by side and write them into `video`."""
    frames = [plan.segment_frames(level, s) for s in batch]
    channels, height, width = video.shape[1], video.shape[3], video.shape[4]
    conditioning = None
    if level > 0:
        endpoints = torch.cat([video[:, :, [f[0], f[-1]]] for f in frames])
        known = KnownFrames([0, plan.keyframes - 1], endpoints)
        conditioning = make_conditioning(settings.method, known, settings.guidance_weight, denoiser.prediction_type,
                                         settings.blend_strength, settings.frame_guidance)
    if level > 0 and settings.infill_cfg is not None:
        cfg = settings.infill_cfg
    latents = denoise(
        denoiser, TextGuidance.from_prompts(lines, negative, cfg).for_frames(frames, plan.frames),
        (len(batch), channels, plan.keyframes, height, width),
        steps=steps, seed=[segment_seed(seed, level, s) for s in batch], scheduler=scheduler, conditioning=conditioning,
        callback=None if on_step is None else (lambda step, total, _: on_step(level, step)),
    )
    new = slice(1, -1) if level > 0 else slice(None)
    for item, indices in enumerate(frames):
        video[0, :, indices[new]] = latents[item, :, new]

