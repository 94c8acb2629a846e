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


def encode(model, text: str):
    return model.text_encoder.encode([text])[0]


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

    return TextGuidance(encode(model, prompt), encode(model, negative_prompt(prompt, options)), options.cfg)


def decode(model, latents) -> np.ndarray:
    frames = np.concatenate([batch.numpy() for batch in model.vae.decode_batches(latents, 16)])
    return (frames * 255).round().astype(np.uint8)


def drawn(model, prompt, seed, options) -> Generated:
    from longvideo.tools.synthetic_shapes import DIRECTIONS, ShapeClip, random_clip, render

    colour, shape, direction = prompt_parts(prompt)
    clip = random_clip(random.Random(seed), options.frames)
    dx, dy = DIRECTIONS[direction]
    start = clip.start
    if (dx, dy) != DIRECTIONS[clip.direction]:  # same size and speed, start moved so that it stays on screen
        r, size, travel = clip.radius, clip.size, clip.speed * (options.frames - 1)
        along = r + 1 + (size - 2 * r - 2 - travel) / 2
        along = along if dx + dy > 0 else size - along
        start = (along, size / 2) if dx else (size / 2, along)
    clip = ShapeClip(shape, colour, direction, start, clip.speed, clip.radius, clip.size)
    return Generated(render(clip, options.frames), [Stretch(0, options.frames, direction)])


def plain_sampler(model, prompt, seed, options) -> Generated:
    from longvideo.sampling.denoise import denoise

    shape = (1, model.denoiser.latent_channels, options.frames, 8, 8)
    latents = denoise(model.denoiser, guidance(model, prompt, options), shape, steps=options.steps, seed=seed,
                      scheduler=options.scheduler)
    return Generated(decode(model, latents), [Stretch(0, options.frames, prompt_parts(prompt)[2])])


def continuation(model, prompt, seed, options) -> Generated:
    """Chunk c is prompted with the direction turned clockwise c times (right, down, left, up: the object circles
    and stays on screen), as workflows/api/continuation.json does."""
    from longvideo.sampling.continuation import ContinuationSettings, continue_video, known_frame_counts

    if options.method == "co-denoise":
        return co_denoise(model, prompt, seed, options)
    colour, shape, direction = prompt_parts(prompt)
    directions = [direction]
    while len(directions) < options.chunks:
        directions.append(CLOCKWISE[directions[-1]])
    settings = ContinuationSettings(options.frames, options.chunks, options.known, options.known, options.method)
    prompts = [guidance(model, f"a {colour} {shape} moving {d}", options) for d in directions]
    latents = continue_video(model.denoiser, prompts, settings, size=(1, 8, 8), steps=options.steps, seed=seed,
                             scheduler=options.scheduler)
    stretches, seams, made = [], [], 0
    for k, d in zip(known_frame_counts(settings, seed, 0), directions):
        if made:
            seams.append(made)
        stretches.append(Stretch(made, options.frames - k, d))
        made += options.frames - k
    return Generated(decode(model, latents), stretches, seams)


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
    settings = CoDenoiseSettings(frames, options.frames, options.overlap, layout_share=options.layout_share)
    prompts = [guidance(model, f"a {colour} {shape} moving {d}", options) for d in directions]
    latents = co_denoise_video(model.denoiser, prompts, settings, size=(1, 8, 8), steps=options.steps, seed=seed,
                               scheduler=options.scheduler)
    stretch = frames / len(directions)
    stretches = [Stretch(round(i * stretch), round((i + 1) * stretch) - round(i * stretch), d) for i, d in enumerate(directions)]
    starts = window_starts(frames, options.frames, options.overlap)
    edges = sorted({s for s in starts[1:]} | {s + options.frames for s in starts[:-1]})
    return Generated(decode(model, latents), stretches, [e for e in edges if 0 < e < frames])


def steps_beside(known: list[int], frames: int) -> list[int]:
    """The steps t-1 -> t that enter or leave a known (parent / key) frame: where sampled frames meet given ones."""
    known = set(known)
    return [t for t in range(1, frames) if t in known or t - 1 in known]


def hierarchical(model, prompt, seed, options) -> Generated:
    """L = options.keyframes keyframes, then one infill level at options.infill_cfg (learned: and frame guidance):
    (L - 1)^2 + 1 frames, one prompt."""
    from longvideo.sampling.hierarchy import HierarchyPlan, HierarchySettings, level_prompts, sample_hierarchy

    plan = HierarchyPlan(options.keyframes, 2)
    text = guidance(model, prompt, options)
    settings = HierarchySettings(method=options.method, infill_cfg=options.infill_cfg,
                                 frame_guidance=options.frame_guidance)
    latents = sample_hierarchy(model.denoiser, plan, level_prompts(plan, [text.positive]), text.negative, options.cfg,
                               settings, size=(8, 8), steps=options.steps, seed=seed, scheduler=options.scheduler)
    keys = plan.level_frames(0)
    return Generated(decode(model, latents), [Stretch(0, plan.frames, prompt_parts(prompt)[2])], steps_beside(keys, plan.frames))


def interpolation(model, prompt, seed, options) -> Generated:
    """5 keyframes from the plain sampler, then one latent interpolation pass x4 at options.infill_cfg (learned: and
    frame guidance): 17 frames."""
    from longvideo.sampling.denoise import denoise
    from longvideo.sampling.interpolation import InterpolationSettings, interpolate_latents

    text = guidance(model, prompt, options)
    keyframes = denoise(model.denoiser, text, (1, model.denoiser.latent_channels, 5, 8, 8), steps=options.steps,
                        seed=seed, scheduler=options.scheduler)
    settings = InterpolationSettings(factor=4, method=options.method, frame_guidance=options.frame_guidance)
    latents = interpolate_latents(model.denoiser, replace(text, cfg=options.infill_cfg), keyframes, settings,
                                  steps=options.steps, seed=seed, scheduler=options.scheduler)
    frames = latents.shape[2]
    return Generated(decode(model, latents), [Stretch(0, frames, prompt_parts(prompt)[2])], steps_beside(range(0, frames, 4), frames))


MODES = {"drawn": drawn, "sampler": plain_sampler, "continuation": continuation, "hierarchical": hierarchical,
         "interpolation": interpolation, "long": continuation}
METHODS = {"continuation": ("replace", "guidance", "resample", "learned", "co-denoise"),
           "hierarchical": ("replace", "guidance", "resample", "blend", "learned"),
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
            f"{100 * np.mean([m.shape_right for m in measured]):.0f}% ({len(measured)} videos)"
            for prompt, measured in by_prompt.items()]


def rows_to_run(modes: list[str], methods: list[str] | None, denoiser) -> list[tuple[str, str]]:
    """(mode, method) pairs; learned only for a model that takes known frames."""
    rows = []
    for mode in modes:
        for method in METHODS.get(mode, ("-",)):
            if methods and method != "-" and method not in methods:
                continue
            if method == "learned" and not denoiser.takes_known_frames:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a diffusers text-to-video folder")
    parser.add_argument("--modes", nargs="+", default=[m for m in MODES if m != "long"], choices=list(MODES),
                        help="'long' is the 1,024-frame continuation with drift per 128-frame block (slow: ask for it)")
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
    from longvideo.models.loader import load_text_to_video

    if args.threads:
        torch.set_num_threads(args.threads)
    options = Options(**{name: getattr(args, name) for name in vars(defaults) if name != "method"})
    for prompt in args.prompts:
        negative_prompt(prompt, options)
    model = load_text_to_video(args.model)
    if args.cost:
        return print_cost(model, args.prompts[0], args.cost, range(args.first_seed, args.first_seed + args.seeds), options)
    print(f"model {os.path.relpath(args.model)}; {len(args.prompts)} prompts x {args.seeds} seeds; {options.frames}-frame "
          f"clips, {options.steps} {options.scheduler} steps, CFG {options.cfg} (infill and interpolation passes "
          f"{options.infill_cfg}, learned with frame guidance {options.frame_guidance}), {options.negative} negative "
          f"prompt; continuation: {options.chunks} chunks, {options.known} known frames; co-denoise: windows of "
          f"{options.frames}, overlap {options.overlap}, FreeNoise noise, layout share {options.layout_share}; "
          f"hierarchical: {options.keyframes} keyframes, depth 2; interpolation: 5 keyframes x4; long: {LONG_FRAMES} frames")
    print(f"{'mode':<14}{'method':<12}{'videos':>7}{'frames':>7}{'colour %':>10}{'shape %':>9}{'direction %':>13}"
          f"{'identity %':>12}{'seam / interior':>17}{'interior px':>13}{'teleport %':>12}{'ms / frame':>12}", flush=True)
    for mode, method in rows_to_run(args.modes, args.methods, model.denoiser):
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
        print(f"{mode:<14}{method:<12}{row['videos']:>7}{row['frames']:>7}{row['colour']:>10.1f}{row['shape']:>9.1f}"
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
