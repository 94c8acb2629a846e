"""Does the video show what the prompt says, and does a long video hold together? Measured on generated frames.

    python bench/quality.py [--model checkpoints/longvideo-shapes] [--seeds 20] [--modes sampler continuation]

Every mode generates one video per (prompt, seed) with the shipped model (or --model), decodes it, and reads the
object's colour and centroid back from every frame (tools/synthetic_shapes.py `find_shape`, colour thresholding
against the grey background). Printed per mode, over all videos:

- colour right: the most frequent colour over the frames is the prompt's colour;
- direction right: the least-squares velocity of the centroid over each stretch of frames made for one prompt
  points the prompt's way (its component along that way is positive, at least 0.3 px per frame, and larger than
  the component across it); the share of stretches;
- shape right: the most frequent shape over the frames is the prompt's shape (`find_shape` tells circle, square and
  triangle by how much of its bounding box the object fills);
- identity: the share of all frames in which the object is found with the prompt's colour (stays the same object,
  does not vanish or change colour over the whole video);
- seam / interior: the mean centroid step across chunk or segment seams over the median step inside them (1 is
  seamless; a jump at the seam makes it larger).
- teleport: the share of videos in which the object jumps at least once anywhere: a frame-to-frame centroid step
  longer than 3x the video's median step plus 2 px. A mean over every seam hides a rare jump; this does not.

- ms / frame: wall time per generated frame (the cost of a method, side by side with the others in one run).

Each long-video mode has a row per frame-conditioning method (METHODS): replace, guidance, resample (replace with
RePaint's resampling), blend (infill and interpolation: the new frames start from the known frames mixed along time),
learned (models that take known frames, such as the embedded one) and, for continuation, co-denoise (sampling/co_denoise.py: the same number of
frames denoised at once in overlapping windows, no known frames; its seams are the window edges). The 'long' mode
(ask for it with --modes long) is a 1,024-frame continuation that also prints identity and the centroid's distance
from the middle per 128-frame block: drift over a long video.

--model shapes-wan measures the pack's Wan-class model (LongVideoShapesWanLoader's files) driven like any ComfyUI model:
ComfyUI's own sampling through LongVideoComfyModel's denoiser (the pinned ComfyUI: COMFYUI_PATH or ../shared/comfyui).
Frame counts are then latent frames (its VAE makes 4 (n - 1) + 1 pixel frames of n) and seams fall on the first pixel
frame of a latent frame. Its rows: the text-to-video file for every method but 'learned', which runs on the
image-to-video file (WanImageToVideo hand-offs in continuation, WanFirstLastFrameToVideo in infill: the known frames
decoded to pixels and encoded by the node, as the pack does it); 'learned-latent' is the same with the known latent
frames themselves put into the image-latent slots (the hand-off the pack does not use, measured beside it);
'co-denoise-abs' is co-denoise with absolute window positions (Wan's rotary frame offsets). Guidance runs only when
--methods names it (a backward pass per step); resample is not available on ComfyUI's models.

--negative look-alike gives a square's videos the prompt with "circle" for "square" as the negative prompt (LOOK_ALIKE)
instead of an empty one: how a user steers the embedded model's squares away from the circles it draws them as.

A "drawn" row measures videos rendered by synthetic_shapes itself: what a perfect model scores.
A mode is one function in MODES returning the frames and where its seams and prompt stretches are; add a row there.
"""

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "checkpoints", "longvideo-shapes")
DEFAULT_PROMPTS = ["a red circle moving right", "a green square moving left", "a blue triangle moving up",
                   "a yellow circle moving down"]
CLOCKWISE = {"right": "down", "down": "left", "left": "up", "up": "right"}
MIN_SPEED = 0.3
TELEPORT_FACTOR, TELEPORT_PX = 3.0, 2.0  # a step longer than 3x the video's median step + 2 px is a jump


@dataclass
class Stretch:
    """Frames [first, first + frames) were made for a prompt saying `direction`."""

    first: int
    frames: int
    direction: str


@dataclass
class Generated:
    video: np.ndarray                                  # uint8 [T, H, W, 3]
    stretches: list[Stretch]
    seams: list[int] = field(default_factory=list)     # frame t: the step t-1 -> t crosses a seam


@dataclass
class Options:
    frames: int = 16
    steps: int = 20
    cfg: float = 7.5
    infill_cfg: float = 3.0  # the infill levels and the interpolation pass, as in the shipped workflows
    frame_guidance: float = 3.0  # learned infill and interpolation, as in the shipped workflows (1: off)
    scheduler: str = "dpmpp_2m"
    chunks: int = 4
    known: int = 4
    keyframes: int = 6
    overlap: int = 8
    layout_share: float = 0.4  # co-denoise, as in the shipped workflow (0: off)
    interpolation_window: int = 17  # keyframes per interpolation window (neighbouring windows share one)
    method: str = "replace"
    negative: str = "empty"  # the negative prompt: "empty", or "look-alike" (a square's prompt names a circle)


def prompt_parts(prompt: str) -> tuple[str, str, str]:
    """(colour, shape, direction) of "a <colour> <shape> moving <direction>"."""
    words = prompt.split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise SystemExit(f"prompt '{prompt}' is not of the form 'a <colour> <shape> moving <direction>'")
    return words[1], words[2], words[4]


# ---------------------------------------------------------------------------------------------------
# modes: (model, prompt, seed, options) -> Generated


@dataclass
class BenchModel:
    """What the modes need of a model. `denoiser` makes the videos, `by_method` the rows of the methods it names where
    another network does (the shapes Wan model's image-to-video file for 'learned'); `prompt` turns a text into the
    samplers' Prompt; `decode` latents [1, C, T, h, w] into uint8 frames [T', H, W, 3]; `temporal`: pixel frames per
    latent frame after the first (1: one pixel frame per latent frame, the UNet3D models)."""

    name: str
    denoiser: object
    prompt: object
    decode: object
    temporal: int = 1
    by_method: dict = field(default_factory=dict)
    skipped: tuple = ()  # methods left out unless --methods names them

    def for_method(self, method: str):
        return self.by_method.get(method, self.denoiser)

    def pixel_frame(self, latent_frame: int) -> int:
        """The first pixel frame of latent frame `latent_frame` (or the video's pixel count, one past its last)."""
        return latent_frame if self.temporal == 1 or latent_frame == 0 else self.temporal * (latent_frame - 1) + 1


def made(model: BenchModel, latents, stretches: list[Stretch], seams: list[int]) -> Generated:
    """The decoded video with its stretches and seams (given in latent frames) in pixel frames."""
    p = model.pixel_frame
    return Generated(model.decode(latents), [Stretch(p(s.first), p(s.first + s.frames) - p(s.first), s.direction) for s in stretches],
                     [p(t) for t in seams])


# The shape a prompted shape is drawn as when the embedded model gets it wrong: squares come out round
# (docs/coherence.md). A negative prompt naming it steers away. Circles and triangles come out right with an empty
# negative, and "a blue circle ..." as a blue triangle's negative breaks the video into specks, so they keep it empty.
LOOK_ALIKE = {"square": "circle"}
NEGATIVES = ("empty", "look-alike")


def negative_prompt(prompt: str, options: Options) -> str:
    if options.negative not in NEGATIVES:
        raise SystemExit(f"--negative '{options.negative}' is not one of {', '.join(NEGATIVES)}")
    colour, shape, direction = prompt_parts(prompt)
    if options.negative == "empty" or shape not in LOOK_ALIKE:
        return ""
    return f"a {colour} {LOOK_ALIKE[shape]} moving {direction}"


def guidance(model, prompt: str, options: Options):
    from longvideo.sampling.denoise import TextGuidance

    return TextGuidance.from_prompts(model.prompt(prompt), model.prompt(negative_prompt(prompt, options)), options.cfg)


def drawn(model, prompt, seed, options) -> Generated:
    from longvideo.tools.synthetic_shapes import DIRECTIONS, ShapeClip, random_clip, render

    colour, shape, direction = prompt_parts(prompt)
    frames = model.pixel_frame(options.frames) if model else options.frames  # as many as a sampler clip decodes to
    clip = random_clip(random.Random(seed), frames)
    dx, dy = DIRECTIONS[direction]
    start = clip.start
    if (dx, dy) != DIRECTIONS[clip.direction]:  # same size and speed, start moved so that it stays on screen
        r, size, travel = clip.radius, clip.size, clip.speed * (frames - 1)
        along = r + 1 + (size - 2 * r - 2 - travel) / 2
        along = along if dx + dy > 0 else size - along
        start = (along, size / 2) if dx else (size / 2, along)
    clip = ShapeClip(shape, colour, direction, start, clip.speed, clip.radius, clip.size)
    return Generated(render(clip, frames), [Stretch(0, frames, direction)])


def plain_sampler(model, prompt, seed, options) -> Generated:
    from longvideo.sampling.denoise import denoise

    shape = (1, model.denoiser.latent_channels, options.frames, 8, 8)
    latents = denoise(model.denoiser, guidance(model, prompt, options), shape, steps=options.steps, seed=seed,
                      scheduler=options.scheduler)
    return made(model, latents, [Stretch(0, options.frames, prompt_parts(prompt)[2])], [])


def continuation(model, prompt, seed, options) -> Generated:
    """Chunk c is prompted with the direction turned clockwise c times (right, down, left, up: the object circles
    and stays on screen), as workflows/api/continuation.json does."""
    from longvideo.sampling.continuation import ContinuationSettings, continue_video, known_frame_counts

    if options.method in CO_DENOISE_POSITIONS:
        return co_denoise(model, prompt, seed, options)
    colour, shape, direction = prompt_parts(prompt)
    directions = [direction]
    while len(directions) < options.chunks:
        directions.append(CLOCKWISE[directions[-1]])
    settings = ContinuationSettings(options.frames, options.chunks, options.known, options.known, sampler_method(options))
    prompts = [guidance(model, f"a {colour} {shape} moving {d}", options) for d in directions]
    latents = continue_video(model.for_method(options.method), prompts, settings, size=(1, 8, 8), steps=options.steps,
                             seed=seed, scheduler=options.scheduler)
    stretches, seams, done = [], [], 0
    for k, d in zip(known_frame_counts(settings, seed, 0), directions):
        if done:
            seams.append(done)
        stretches.append(Stretch(done, options.frames - k, d))
        done += options.frames - k
    return made(model, latents, stretches, seams)


def co_denoise(model, prompt, seed, options) -> Generated:
    """As many frames as `continuation` makes, denoised at once in overlapping windows of options.frames frames
    (overlap options.overlap) with FreeNoise noise; the prompt turns clockwise along the timeline as continuation's
    chunks do. Seams: the first and last frame of every window, where a window's edge could show."""
    from longvideo.sampling.co_denoise import CoDenoiseSettings, co_denoise_video
    from longvideo.sampling.context_windows import window_starts

    colour, shape, direction = prompt_parts(prompt)
    directions = [direction]
    while len(directions) < options.chunks:
        directions.append(CLOCKWISE[directions[-1]])
    frames = options.frames + (options.chunks - 1) * (options.frames - options.known)
    settings = CoDenoiseSettings(frames, options.frames, options.overlap, layout_share=options.layout_share,
                                 positions=CO_DENOISE_POSITIONS[options.method])
    prompts = [guidance(model, f"a {colour} {shape} moving {d}", options) for d in directions]
    latents = co_denoise_video(model.denoiser, prompts, settings, size=(1, 8, 8), steps=options.steps, seed=seed,
                               scheduler=options.scheduler)
    stretch = frames / len(directions)
    stretches = [Stretch(round(i * stretch), round((i + 1) * stretch) - round(i * stretch), d) for i, d in enumerate(directions)]
    starts = window_starts(frames, options.frames, options.overlap)
    edges = sorted({s for s in starts[1:]} | {s + options.frames for s in starts[:-1]})
    return made(model, latents, stretches, [e for e in edges if 0 < e < frames])


def sampler_method(options: Options) -> str:
    """The samplers' method of a row: 'learned-latent' is 'learned' on a model whose hand-off is latents."""
    return "learned" if options.method == LATENT_HAND_OFF else options.method


def steps_beside(known: list[int], frames: int) -> list[int]:
    """The steps t-1 -> t that enter or leave a known (parent / key) frame: where sampled frames meet given ones."""
    known = set(known)
    return [t for t in range(1, frames) if t in known or t - 1 in known]


def hierarchical(model, prompt, seed, options) -> Generated:
    """L = options.keyframes keyframes, then one infill level at options.infill_cfg (learned: and frame guidance):
    (L - 1)^2 + 1 frames, one prompt."""
    from longvideo.sampling.hierarchy import HierarchyPlan, HierarchySettings, level_prompts, sample_hierarchy

    plan = HierarchyPlan(options.keyframes, 2)
    settings = HierarchySettings(method=sampler_method(options), infill_cfg=options.infill_cfg,
                                 frame_guidance=options.frame_guidance)
    latents = sample_hierarchy(model.for_method(options.method), plan, level_prompts(plan, [model.prompt(prompt)]),
                               model.prompt(negative_prompt(prompt, options)), options.cfg, settings, size=(8, 8),
                               steps=options.steps, seed=seed, scheduler=options.scheduler)
    keys = plan.level_frames(0)
    return made(model, latents, [Stretch(0, plan.frames, prompt_parts(prompt)[2])], steps_beside(keys, plan.frames))


def interpolation(model, prompt, seed, options) -> Generated:
    """5 keyframes from the plain sampler, then one latent interpolation pass x4 at options.infill_cfg (learned: and
    frame guidance): 17 frames."""
    from longvideo.sampling.denoise import denoise
    from longvideo.sampling.interpolation import InterpolationSettings, interpolate_latents

    text = guidance(model, prompt, options)
    keyframes = denoise(model.denoiser, text, (1, model.denoiser.latent_channels, 5, 8, 8), steps=options.steps,
                        seed=seed, scheduler=options.scheduler)
    settings = InterpolationSettings(factor=4, method=options.method, frame_guidance=options.frame_guidance,
                                     window=options.interpolation_window,
                                     overlap=min(InterpolationSettings.overlap, options.interpolation_window - 1))
    latents = interpolate_latents(model.for_method(options.method), replace(text, cfg=options.infill_cfg), keyframes, settings,
                                  steps=options.steps, seed=seed, scheduler=options.scheduler)
    frames = latents.shape[2]
    return made(model, latents, [Stretch(0, frames, prompt_parts(prompt)[2])], steps_beside(range(0, frames, 4), frames))


MODES = {"drawn": drawn, "sampler": plain_sampler, "continuation": continuation, "hierarchical": hierarchical,
         "interpolation": interpolation, "long": continuation}
# 'learned' with the known latent frames themselves in the image slots of the model's conditioning instead of the
# latents its node encodes from their decoded pixels (what the pack does): the shapes Wan model's rows only.
LATENT_HAND_OFF = "learned-latent"
# co-denoise methods and their window positions (absolute: rotary frame offsets, models whose positions can move)
CO_DENOISE_POSITIONS = {"co-denoise": "relative", "co-denoise-abs": "absolute"}
METHODS = {"continuation": ("replace", "guidance", "resample", "learned", LATENT_HAND_OFF, "co-denoise", "co-denoise-abs"),
           "hierarchical": ("replace", "guidance", "resample", "blend", "learned", LATENT_HAND_OFF),
           "interpolation": ("replace", "guidance", "resample", "blend", "learned"), "long": ("learned", "co-denoise", "replace")}
LONG_FRAMES = 1024
BLOCK = 128


# ---------------------------------------------------------------------------------------------------
# measures


@dataclass
class Measured:
    colour_right: bool
    shape_right: bool
    directions_right: list[bool]
    identity: float
    seam_steps: list[float]
    interior_steps: list[float]
    teleported: bool
    blocks: list[tuple[float, float]]   # per BLOCK frames: (identity %, mean distance of the centroid from the frame centre)


def velocity(track: list[tuple[int, tuple[float, float]]]) -> np.ndarray | None:
    """Least-squares (vx, vy) in pixels per frame of (frame, centre) points; None with fewer than 3."""
    if len(track) < 3:
        return None
    t = np.array([f for f, _ in track], np.float64)
    xy = np.array([c for _, c in track], np.float64)
    t = t - t.mean()
    return (t[:, None] * (xy - xy.mean(0))).sum(0) / (t * t).sum()


def direction_right(v: np.ndarray | None, direction: str) -> bool:
    from longvideo.tools.synthetic_shapes import DIRECTIONS

    if v is None:
        return False
    d = np.array(DIRECTIONS[direction])
    along, across = float(v @ d), abs(float(v @ np.array([-d[1], d[0]])))
    return along >= MIN_SPEED and along > across


def teleports(steps: list[float]) -> bool:
    """Whether frame-to-frame centroid steps hold a jump: one longer than 3x their median plus 2 px."""
    return bool(steps) and max(steps) > TELEPORT_FACTOR * float(np.median(steps)) + TELEPORT_PX


def centroid_steps(frames: np.ndarray) -> list[float]:
    """The object's centroid steps between consecutive frames where it is found in both."""
    from longvideo.tools.synthetic_shapes import find_shape

    centres = [find_shape(frame).centre for frame in frames]
    return [float(np.hypot(*np.subtract(b, a))) for a, b in zip(centres, centres[1:]) if a and b]


def measure(generated: Generated, colour: str, shape: str | None = None) -> Measured:
    from longvideo.tools.synthetic_shapes import find_shape

    found = [find_shape(frame) for frame in generated.video]
    colours = Counter(f.colour for f in found if f.colour is not None)
    shapes = Counter(f.shape for f in found if f.shape is not None)
    directions = []
    for stretch in generated.stretches:
        track = [(t, found[t].centre) for t in range(stretch.first, stretch.first + stretch.frames) if found[t].centre]
        directions.append(direction_right(velocity(track), stretch.direction))
    seam_steps, interior_steps = [], []
    for t in range(1, len(found)):
        if found[t].centre and found[t - 1].centre:
            step = float(np.hypot(*np.subtract(found[t].centre, found[t - 1].centre)))
            (seam_steps if t in generated.seams else interior_steps).append(step)
    middle = generated.video.shape[2] / 2
    blocks = []
    for first in range(0, len(found), BLOCK):
        block = found[first:first + BLOCK]
        offsets = [float(np.hypot(f.centre[0] - middle, f.centre[1] - middle)) for f in block if f.centre]
        blocks.append((100 * sum(f.colour == colour for f in block) / len(block), np.mean(offsets) if offsets else float("nan")))
    return Measured(
        colour_right=bool(colours) and colours.most_common(1)[0][0] == colour,
        shape_right=bool(shapes) and shapes.most_common(1)[0][0] == shape,
        directions_right=directions,
        identity=sum(f.colour == colour for f in found) / len(found),
        seam_steps=seam_steps,
        interior_steps=interior_steps,
        teleported=teleports(seam_steps + interior_steps),
        blocks=blocks,
    )


def summarise(results: list[Measured]) -> dict:
    directions = [d for r in results for d in r.directions_right]
    seams = [s for r in results for s in r.seam_steps]
    interior = [s for r in results for s in r.interior_steps]
    return {
        "videos": len(results),
        "colour": 100 * np.mean([r.colour_right for r in results]),
        "shape": 100 * np.mean([r.shape_right for r in results]),
        "direction": 100 * np.mean(directions) if directions else float("nan"),
        "identity": 100 * np.mean([r.identity for r in results]),
        "seam": np.mean(seams) / np.median(interior) if seams and interior else float("nan"),
        "interior": np.median(interior) if interior else float("nan"),
        "teleport": 100 * np.mean([r.teleported for r in results]),
        "blocks": np.nanmean([r.blocks for r in results], axis=0).tolist() if len({len(r.blocks) for r in results}) == 1 else [],
    }


def save_strip(path: str, videos: list[np.ndarray], every: int = 1, most: int = 32) -> None:
    """One row of frames per video (every `every`-th frame, at most `most`), for looking at what was measured."""
    import cv2

    rows = [np.concatenate(list(v[::every][:most]), axis=1) for v in videos]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def per_prompt_lines(by_prompt: dict[str, list[Measured]]) -> list[str]:
    """A row's colour and shape right, per prompt (which prompt a row's misses come from)."""
    return [f"    {prompt}: colour {100 * np.mean([m.colour_right for m in measured]):.0f}%, shape "
            f"{100 * np.mean([m.shape_right for m in measured]):.0f}%, identity "
            f"{100 * np.mean([m.identity for m in measured]):.0f}% ({len(measured)} videos)"
            for prompt, measured in by_prompt.items()]


def rows_to_run(modes: list[str], methods: list[str] | None, model: BenchModel) -> list[tuple[str, str]]:
    """(mode, method) pairs; learned only for a model that takes known frames, co-denoise with absolute window positions
    only for one whose frame positions can move, and the methods a model skips unless --methods names them."""
    rows = []
    for mode in modes:
        for method in METHODS.get(mode, ("-",)):
            if methods and method != "-" and method not in methods:
                continue
            if method == "learned" and not model.for_method(method).takes_known_frames:
                continue
            if method == LATENT_HAND_OFF and method not in model.by_method:
                continue
            if CO_DENOISE_POSITIONS.get(method) == "absolute" and not hasattr(model.denoiser, "check_window_positions"):
                continue
            if method in model.skipped and not (methods and method in methods):
                continue
            rows.append((mode, method))
    return rows


def print_cost(model, prompt: str, methods: list[str], seeds, options: Options) -> None:
    times = {method: [] for method in methods}
    for seed in seeds:
        for method in methods:
            began = time.perf_counter()
            continuation(model, prompt, seed, replace(options, method=method))
            times[method].append(time.perf_counter() - began)
    first, second = (statistics.median(times[m]) for m in methods)
    print(f"continuation, {options.chunks} chunks of {options.frames}, {len(times[methods[0]])} runs each, alternating: "
          f"{methods[0]} {first:.2f} s, {methods[1]} {second:.2f} s, {methods[1]} / {methods[0]} = {second / first:.3f}")


SHAPES_WAN = "shapes-wan"
# The shapes Wan model's rows: clips of 5 latent frames (17 pixel frames, its training length), 2 carried over (the
# last 5 pixel frames: WanImageToVideo's start image), hierarchical segments of 5 latent frames, windows of 5 by 2,
# interpolation one gap (2 keyframes -> 5 latent frames) per run, as its first-last-frame hand-off needs; CFG 5
# everywhere (Wan's own examples use 5-6, infill at the same CFG as in the Wan workflows); no frame guidance (the
# pack's own models only).
SHAPES_WAN_OPTIONS = {"frames": 5, "known": 2, "keyframes": 5, "overlap": 2, "cfg": 5.0, "infill_cfg": 5.0,
                      "frame_guidance": 1.0, "interpolation_window": 2}


def load_unet3d_model(path: str) -> BenchModel:
    from longvideo.models.loader import load_text_to_video
    from longvideo.sampling.denoise import Prompt

    model = load_text_to_video(path)

    def decode(latents) -> np.ndarray:
        frames = np.concatenate([batch.numpy() for batch in model.vae.decode_batches(latents, 16)])
        return (frames * 255).round().astype(np.uint8)

    return BenchModel(os.path.relpath(path), model.denoiser, lambda text: Prompt(model.text_encoder.encode([text])[0]), decode)


def load_shapes_wan_model(shift: float) -> BenchModel:
    """The shapes Wan model loaded as LongVideoShapesWanLoader loads it (ComfyUI's MODEL, as from Load Diffusion Model),
    driven by LongVideoComfyModel's denoiser: ComfyUI's own sampling. Text-to-video file for every row, the
    image-to-video file for 'learned'."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import comfy_env

    if not comfy_env.import_comfy_or_report():
        raise SystemExit(1)
    import torch

    from longvideo.models.comfy_model import ComfyDenoiser
    from longvideo.models.shapes_wan import load_shapes_wan_text_and_vae, load_shapes_wan_transformer
    from longvideo.sampling.denoise import Prompt

    text, vae = load_shapes_wan_text_and_vae()
    patchers = {}
    for variant in ("text-to-video", "image-to-video"):
        patchers[variant] = load_shapes_wan_transformer(variant)
        if shift:
            from comfy_extras.nodes_model_advanced import ModelSamplingSD3

            patchers[variant] = ModelSamplingSD3().patch(patchers[variant], shift)[0]
    denoiser = ComfyDenoiser(patchers["text-to-video"], "simple", vae=vae)

    def prompt(line: str):
        tokens = text.encode([line])
        return Prompt(tokens, denoiser.native_conditioning([[tokens, {}]]))

    def decode(latents) -> np.ndarray:
        with torch.no_grad():
            frames = vae.decode(latents)[0].numpy()
        return (frames * 255).round().astype(np.uint8)

    shown_shift = shift or "8 (the model's own)"
    name = f"{SHAPES_WAN} (ComfyUI's sampling, simple sigmas, shift {shown_shift})"
    learned = {"learned": ComfyDenoiser(patchers["image-to-video"], "simple", vae=vae),
               LATENT_HAND_OFF: latent_hand_off(ComfyDenoiser)(patchers["image-to-video"], "simple", vae=vae)}
    return BenchModel(name, denoiser, prompt, decode, temporal=4, by_method=learned, skipped=("resample", "guidance"))


def latent_hand_off(comfy_denoiser: type) -> type:
    """ComfyDenoiser with the latent hand-off: the conditioning its node builds from the known frames' pixels, then the
    known latent frames themselves put into the image latents' known slots (the mask unchanged)."""

    class LatentHandOff(comfy_denoiser):
        def _learned_runs(self, guidance, shape, conditioning):
            runs = super()._learned_runs(guidance, shape, conditioning)
            known = conditioning.known
            for rows, inputs in runs:
                latents = known.latents[rows[0] if known.latents.shape[0] > 1 else 0].unsqueeze(0).float()
                for conditioning_list in (inputs.positive, inputs.negative):
                    for entry in conditioning_list or ():
                        image = entry[1]["concat_latent_image"].clone()
                        image[:, :, list(known.indices)] = latents.to(image)
                        entry[1] = {**entry[1], "concat_latent_image": image}
            return runs

    return LatentHandOff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=(
        f"a diffusers text-to-video folder, or '{SHAPES_WAN}': the pack's Wan-class model through ComfyUI's sampling "
        "(needs ComfyUI: COMFYUI_PATH or ../shared/comfyui; frame counts are then latent frames)"))
    parser.add_argument("--shift", type=float, default=0.0, help=(
        f"{SHAPES_WAN} only: ModelSamplingSD3's shift on the model (0: the model's own, Wan 2.1's 8)"))
    parser.add_argument("--modes", nargs="+", default=None, choices=list(MODES), help=(
        "'long' is the 1,024-frame continuation with drift per 128-frame block (slow: ask for it); default: every other "
        "mode"))
    parser.add_argument("--methods", nargs="+", default=None, help="only these frame-conditioning methods (default: all)")
    parser.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    parser.add_argument("--seeds", type=int, default=20, help="seeds first-seed .. first-seed + seeds - 1 per prompt")
    parser.add_argument("--long-seeds", type=int, default=1, help="seeds per prompt for the 'long' mode")
    parser.add_argument("--first-seed", type=int, default=0)
    defaults = Options()
    for name, value in vars(defaults).items():
        if name != "method":
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--strips", default=None, help="folder to write a PNG of each row's first videos into")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--per-prompt", action="store_true", help="under each row, its colour and shape per prompt")
    parser.add_argument("--cost", nargs=2, metavar="METHOD", help=(
        "instead of the table: time continuation with these two methods alternating in this process (--seeds repeats, "
        "the first prompt) and print the ratio, the cost comparison the table's ms / frame cannot give on a busy machine"))
    args = parser.parse_args()

    sys.path[:0] = [ROOT]
    import torch

    from pack_import import import_pack

    import_pack()

    if args.threads:
        torch.set_num_threads(args.threads)
    shapes_wan = args.model == SHAPES_WAN
    options = Options(**{name: getattr(args, name) if not shapes_wan or getattr(args, name) != getattr(defaults, name)
                         else SHAPES_WAN_OPTIONS.get(name, getattr(defaults, name))
                         for name in vars(defaults) if name != "method"})
    for prompt in args.prompts:
        negative_prompt(prompt, options)
    model = load_shapes_wan_model(args.shift) if shapes_wan else load_unet3d_model(args.model)
    modes = args.modes or [m for m in MODES if m != "long"]
    if args.cost:
        return print_cost(model, args.prompts[0], args.cost, range(args.first_seed, args.first_seed + args.seeds), options)
    print(f"model {model.name}; {len(args.prompts)} prompts x {args.seeds} seeds; {options.frames}-frame "
          f"clips, {options.steps} {options.scheduler} steps, CFG {options.cfg} (infill and interpolation passes "
          f"{options.infill_cfg}, learned with frame guidance {options.frame_guidance}), {options.negative} negative "
          f"prompt; continuation: {options.chunks} chunks, {options.known} known frames; co-denoise: windows of "
          f"{options.frames}, overlap {options.overlap}, FreeNoise noise, layout share {options.layout_share}; "
          f"hierarchical: {options.keyframes} keyframes, depth 2; interpolation: 5 keyframes x4 in windows of "
          f"{options.interpolation_window}; long: {LONG_FRAMES} frames")
    print(f"{'mode':<14}{'method':<16}{'videos':>7}{'frames':>7}{'colour %':>10}{'shape %':>9}{'direction %':>13}"
          f"{'identity %':>12}{'seam / interior':>17}{'interior px':>13}{'teleport %':>12}{'ms / frame':>12}", flush=True)
    for mode, method in rows_to_run(modes, args.methods, model):
        row_options = replace(options, method=method)
        seeds = range(args.first_seed, args.first_seed + (args.long_seeds if mode == "long" else args.seeds))
        if mode == "long":
            row_options = replace(row_options, chunks=1 + -(-(LONG_FRAMES - options.frames) // (options.frames - options.known)))
        began, by_prompt, videos, frames = time.perf_counter(), {}, [], 0
        for prompt in args.prompts:
            colour, shape, _ = prompt_parts(prompt)
            by_prompt[prompt] = []
            for seed in seeds:
                generated = MODES[mode](model, prompt, seed, row_options)
                by_prompt[prompt].append(measure(generated, colour, shape))
                frames += generated.video.shape[0]
                if len(videos) < 8 and seed < args.first_seed + 2:
                    videos.append(generated.video)
        results = [measured for prompt_results in by_prompt.values() for measured in prompt_results]
        row = {**summarise(results), "ms": 1000 * (time.perf_counter() - began) / frames, "frames": generated.video.shape[0]}
        print(f"{mode:<14}{method:<16}{row['videos']:>7}{row['frames']:>7}{row['colour']:>10.1f}{row['shape']:>9.1f}"
              f"{row['direction']:>13.1f}{row['identity']:>12.1f}{row['seam']:>17.2f}{row['interior']:>13.2f}{row['teleport']:>12.1f}"
              f"{row['ms']:>12.1f}",
              flush=True)
        if args.per_prompt:
            print("\n".join(per_prompt_lines(by_prompt)), flush=True)
        if mode == "long" and row["blocks"]:
            print("    per 128 frames, identity %: " + " ".join(f"{b[0]:.0f}" for b in row["blocks"]))
            print("    per 128 frames, centroid px from the middle: " + " ".join(f"{b[1]:.1f}" for b in row["blocks"]), flush=True)
        if args.strips:
            os.makedirs(args.strips, exist_ok=True)
            every = 8 if mode == "long" else 1
            save_strip(os.path.join(args.strips, f"{mode}-{method}.png".replace("--", "")), videos, every)


if __name__ == "__main__":
    main()
