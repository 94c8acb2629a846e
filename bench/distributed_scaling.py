"""Scaling over gloo worker processes on the CPU, one torch thread each, as the nodes start them.

    python bench/distributed_scaling.py [--parts clip split] [--steps 4] [--frames 32] [--json scaling.json]
    python bench/distributed_scaling.py --parts split --quick     # the tests' tiny model, a few seconds a run (CI)

Clip-parallel (LongVideoDistributedSampler's workers, sample_job):

1. Throughput: the same total frames as 1 process (one clip of `frames`) and as 2 processes (two clips of frames/2),
   on a small random UNet3D (32/64 channels, 256x256 pixels = 32x32 latents, CFG). Timed inside the workers from a
   common start to the end of sampling (process start and model loading excluded), as wall time and as each rank's
   CPU time (its own work plus its communication threads). On a machine shared with other jobs the wall-time ratio
   falls short of the cores the ranks really get; the CPU-time ratio says what a free core per rank gives.
2. Bytes each rank receives per step (halos + global frames + GroupNorm statistics + the lockstep check) for
   F = 16, 32, 64 frames per clip at 2 ranks: it should not depend on F.
3. Peak RSS per rank as the rank count grows (F fixed): it should stay flat; only the all-gathers grow, by a few frames.

Split videos (LongVideoHierarchicalSampler and LongVideoCoDenoiseSampler with devices 'cpu, cpu'): one video on 1 rank
against the same video on 2 gloo ranks, side by side in one run, through the nodes' own jobs (hierarchy_job and
co_denoise_job of sampling/distributed_launch.py, wrapped by `profiled_job` below only to time the rank's collectives
and CPU), on the same random UNet3D (32/64 channels) at 128x128 pixels (16x16 latents), CFG 7.5, DDIM:

4. hierarchical: L = 5 keyframes, depth 3 (65 frames; 1, 4 and 16 segments of 5 frames per level), 4 steps, batch
   cap 8. 2 ranks share every level's segments and all-gather the new frames after it; the keyframe level is one
   segment, which one rank samples (rank_share gives it to the last rank) while the other waits.
5. co-denoise: 72 frames in windows of 16 overlapping by 8 (8 windows a step), 10 steps of which the first 4
   (layout_share 0.4, the node's default) are the layout window: one model call, made by rank 0 while rank 1 waits.
   2 ranks share every other step's windows and all-reduce the blended sums.

Both ranks counts run as worker processes through run_ranks: the baseline is one worker (run_ranks(['cpu'])), not
this process, so that both sides start, build the model, take their thread count and time themselves the same way
(a 1-rank communicator makes no collective: the 1-rank run computes what the node's in-process path computes). The
launcher sets torch.set_num_threads(1) before run_ranks, which passes its thread count to CPU ranks: one thread per
rank, so 2 ranks use the machine's 2 cores and 1 rank one of them. Columns: sampling s is rank_result's "seconds" of
the slowest rank (measured after the model is built: process start and model loading excluded), speed-up its ratio
to 1 rank; wall s is the whole run_ranks call (process start, imports and the ranks' model builds, one after another,
included); limit is the work-balance limit (Amdahl): the model work of 1 rank over the busiest rank's share of it (a
level's segments, a step's windows; the keyframe level and the layout steps on one rank); CPU s is the busiest
rank's CPU seconds while sampling (its threads included) and CPU x the speed-up those give, what a free core per rank
would give; core share is each rank's CPU seconds over its seconds outside collectives (1: it had a core to itself);
collectives s is each rank's wall time inside all_gather/all_reduce (transfers plus waiting for the other rank);
KB/step is bytes_received / steps per rank; max |2 - 1| is the largest difference of the latents of 2 and 1 ranks
(must be <= 1e-5: the script fails otherwise). Goal: speed-up >= 1.6x on this 2-core machine. --repeats N runs 1 and
2 ranks N times in turn and keeps each one's fastest run.

Measured (2-core AMD EPYC VM, torch 2.13 CPU, `python bench/distributed_scaling.py --parts split`, idle machine):

    strategy      ranks  sampling s  speed-up  limit  wall s  CPU x  core share  collectives s  KB/step/rank  max |2 - 1|
    hierarchical      1        9.39      1.00   1.00    14.0   1.00        1.00           0.00           0.0            0
                      2        5.32      1.77   1.91    13.7   1.80  1.00, 0.99     1.00, 0.06    35.0, 35.0            0
    co-denoise        1       17.58      1.00   1.00    22.4   1.00        1.00           0.00           0.0            0
                      2        9.37      1.88   1.86    18.4   1.90  1.00, 1.00     0.08, 1.35  397.0, 397.0            0

Both meet the 1.6x goal on a free machine, by sampling time. Where the rest goes:
- co-denoise (1.88x against a limit of 1.86x): the 4 layout steps are one call each, made by rank 0; rank 1 waits
  1.35 s in the collective that hands the call's result over, which is those 4 calls (17.58 s / 52 calls = 0.34 s a
  call). Without them the limit would be 2.0x. The all-reduced sums (397 KB a step) cost nothing measurable here.
- hierarchical (1.77x against 1.91x): the keyframe level is one segment that rank 1 samples alone while rank 0
  waits, and rank 1 also computed more slowly: 5.23 s against rank 0's 4.30 s for 11 against 10 segment-runs a step
  (0.119 against 0.108 s a segment-step; 0.112 s on 1 rank). Its keyframe segment is a batch of 1, which costs more per
  segment than a batched one (on this model 0.106-0.119 s against 0.098-0.100 s in a batch of 8), and it runs three
  batch shapes whose first calls set up their kernels (rank 0 two), so rank 0 waited 1.00 s in collectives in all.
  Co-denoise's calls are alike on every rank (0.33-0.34 s a call on 1 and on 2 ranks), so it has no such loss.
- wall time, process start and model loading included: 1.02x and 1.22x. Starting a worker and importing torch and
  diffusers takes 4-5 s, and the ranks build the model one after another (build_in_turn): the 2-rank runs spent 8.4
  and 9.0 s outside sampling against 4.6 and 4.8 s for 1 rank, about what the split saved at these sizes; long runs
  repay it, short ones do not.
- on a machine shared with other jobs the speed-up is lost to contention, not to the split: in four runs of the same
  command while other benchmarks ran on the cores (load average 2-4) the 2-rank runs measured 0.72-1.16x
  (hierarchical) and 0.81-1.50x (co-denoise) while the CPU-time speed-ups stayed 1.65-2.10x; the core-share column
  then read 0.35-0.86 for the 2 ranks (and 0.77-0.99 for the 1-rank run, whose one thread finds a core more easily): a
  third of a core to most of one each. Check that column before reading the speed-up; --repeats helps only against
  short bursts.
What would help (sampling/, not changed here): split the lone calls by guidance (the keyframe segment and the layout
window are one CFG batch of 2, unconditional and conditional: each of 2 ranks could run one half and all-gather the
predictions, which brings both limits to 2.0x at 2 ranks); keep worker ranks alive between runs with the model loaded
(a pool), or build the models at once where memory allows, for the wall time of short runs; and for co-denoise,
frames that give an even number of windows a step (an odd count leaves one rank a window more every step).
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL = 1.6
TOLERANCE = 1e-5
JOBS = {"hierarchical": "hierarchy_job", "co-denoise": "co_denoise_job"}
# The split-video cases: the full run's (on the 32/64-channel bench model) and the quick run's (the tests' tiny model).
SPLIT_CASES = {
    "full": {"hierarchical": dict(keyframes=5, depth=3, latent=16, steps=4, batch_cap=8),
             "co-denoise": dict(frames=72, window=16, overlap=8, layout_share=0.4, latent=16, steps=10)},
    # Batch cap 1: the tests' tiny model rounds a segment batched with another up to 8e-6 apart from the same segment
    # alone (its CFG 7.5 latents are large), too near the 1e-5 tolerance for CI; the full run batches (cap 8).
    "quick": {"hierarchical": dict(keyframes=3, depth=3, latent=4, steps=2, batch_cap=1),
              "co-denoise": dict(frames=20, window=8, overlap=4, layout_share=0.4, latent=4, steps=4)},
}


def use_repository_paths() -> None:
    """The repository root (pack_import) and tests/ (tiny_models) on the import path, for a run as a script."""
    for path in (os.path.join(ROOT, "tests"), ROOT):
        if path not in sys.path:
            sys.path.insert(0, path)


def save_bench_model(folder: str, channels=(32, 64)) -> str:
    """A random text-to-video folder with a UNet big enough for compute to dominate (temporal convs made non-zero)."""
    import torch
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel
    from tiny_models import CONTEXT_WIDTH, tiny_components

    _, vae, text_encoder, tokenizer, scheduler = tiny_components()
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        block_out_channels=channels, layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=CONTEXT_WIDTH, attention_head_dim=8, norm_num_groups=8,
    ).eval()
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".temp_convs." in name and not parameter.any():
                parameter.normal_(0, 0.02)
    TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def run(folder: str, ranks: int, frames: int, latent_size: int, steps: int) -> list[dict]:
    import torch

    from longvideo.sampling.distributed import ClipParallelSettings
    from longvideo.sampling.distributed_launch import run_ranks
    from tiny_models import CONTEXT_WIDTH

    settings = ClipParallelSettings(frames_per_clip=frames, padding=8, global_frames=16)
    generator = torch.Generator().manual_seed(0)
    prompt = [torch.randn(1, 77, CONTEXT_WIDTH, generator=generator).numpy(), torch.randn(1, 77, CONTEXT_WIDTH, generator=generator).numpy()]
    payload = {"model_path": folder, "dtype": "fp32", "settings": {**dataclasses.asdict(settings), "phases": list(settings.phases)},
               "prompts": [prompt], "cfg": 7.5, "size": [1, latent_size, latent_size], "steps": steps, "seed": 0, "scheduler": "ddim"}
    return run_ranks(["cpu"] * ranks, "sampling.distributed_launch:sample_job", payload)


def clip_parallel_part(temporary: str, steps: int, frames_total: int) -> None:
    """Clip-parallel sections 1-3: prints their tables."""
    big = save_bench_model(os.path.join(temporary, "bench"))
    small = save_bench_model(os.path.join(temporary, "small"), channels=(8, 16))

    one = run(big, 1, frames_total, 32, steps)
    two = run(big, 2, frames_total // 2, 32, steps)
    seconds_one, seconds_two = max(r["seconds"] for r in one), max(r["seconds"] for r in two)
    cpu_one, cpu_two = max(r["cpu_seconds"] for r in one), max(r["cpu_seconds"] for r in two)
    print(f"throughput, {frames_total} frames at 256x256, {steps} DDIM steps with CFG, gloo, 1 thread per process")
    print("(wall: what the run took on this machine; CPU: the busiest rank's CPU seconds, what it takes with a free core per rank)")
    print(f"{'processes':>10}{'frames/clip':>13}{'wall s':>9}{'frames/s':>10}{'speed-up':>10}{'CPU s':>9}{'speed-up by CPU':>17}")
    for count, seconds, cpu in ((1, seconds_one, cpu_one), (2, seconds_two, cpu_two)):
        print(f"{count:>10}{frames_total // count:>13}{seconds:9.2f}{frames_total / seconds:10.2f}{seconds_one / seconds:10.2f}"
              f"{cpu:9.2f}{cpu_one / cpu:17.2f}")

    print("\nbytes received per step by each rank (2 ranks, padding 8, 16 global frames, 64x64 px, CFG), small model")
    print(f"{'F':>6}{'rank 0 KB/step':>16}{'rank 1 KB/step':>16}")
    memory = {}
    for frames in (16, 32, 64):
        results = run(small, 2, frames, 8, 2)
        if frames == 16:
            memory[2] = results
        print(f"{frames:>6}" + "".join(f"{r['bytes_received'] / 2 / 1024:16.1f}" for r in results))

    print("\npeak RSS per rank (F = 16, small model, 2 steps)")
    print(f"{'ranks':>6}{'max MB':>10}{'min MB':>10}{'received KB/step (max)':>24}")
    for ranks in (1, 2, 4):
        results = memory.get(ranks) or run(small, ranks, 16, 8, 2)
        rss = [r["peak_rss_mb"] for r in results]
        print(f"{ranks:>6}{max(rss):10.1f}{min(rss):10.1f}{max(r['bytes_received'] for r in results) / 2 / 1024:24.1f}")


# ---------------------------------------------------------------------------------------------------
# split videos: hierarchical and co-denoise over ranks (also used by bench/gpu_suite.py's ranks/* rows)


def unet3d_rank_spec(folder: str, dtype: str = "fp32") -> dict:
    """What models/rank_models.rank_model says of a plain UNet3D model loaded from `folder` (no attention scope, no
    InfiNet): each rank loads the folder itself."""
    return {"kind": "unet3d", "path": folder, "dtype": dtype, "scope": None, "infinet": None}


def random_prompts(width: int, count: int = 2):
    """`count` prompt embeddings and a negative one, [1, 77, width] each (seeded: every run gets the same)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    lines = [torch.randn(1, 77, width, generator=generator) for _ in range(count)]
    return lines, torch.randn(1, 77, width, generator=generator)


def hierarchy_payload(spec: dict, width: int, *, keyframes: int, depth: int, latent, steps: int, batch_cap: int,
                      cfg: float = 7.5, seed: int = 0) -> dict:
    """hierarchy_job's payload as LongVideoHierarchicalSampler builds it (prompts along the timeline, method replace)."""
    from longvideo.sampling import hierarchy

    plan = hierarchy.HierarchyPlan(keyframes, depth)
    lines, negative = random_prompts(width)
    size = [latent, latent] if isinstance(latent, int) else list(latent)
    return {"model": spec, "infill_model": None, "plan": [keyframes, depth],
            "settings": vars(hierarchy.HierarchySettings(batch_cap=batch_cap)), "negative": negative,
            "prompts": hierarchy.timeline_prompts(plan, lines), "cfg": cfg, "size": size, "steps": steps, "seed": seed,
            "scheduler": "ddim", "start": None}


def co_denoise_payload(spec: dict, width: int, *, frames: int, window: int, overlap: int, layout_share: float, latent,
                       steps: int, cfg: float = 7.5, seed: int = 0) -> dict:
    """co_denoise_job's payload as LongVideoCoDenoiseSampler builds it (two prompts along the timeline, freenoise)."""
    from longvideo.sampling import co_denoise

    lines, negative = random_prompts(width)
    settings = co_denoise.CoDenoiseSettings(frames, window, overlap, layout_share=layout_share)
    size = [1, latent, latent] if isinstance(latent, int) else [1, *latent]
    return {"model": spec, "settings": vars(settings), "size": size, "steps": steps, "seed": seed, "scheduler": "ddim",
            "start": None, "prompts": [{"positive": line, "negative": negative, "cfg": cfg} for line in lines]}


def work_shares(strategy: str, payload: dict, ranks: int) -> tuple[int, int]:
    """(model work of the whole video, model work of the busiest of `ranks` ranks), counted in segments of a level or
    windows of a step (a batch of b segments costs b: the CPU's time grows with the batch); the keyframe level's one
    segment and the layout steps' one call go to one rank."""
    from longvideo.sampling.co_denoise import CoDenoiseSettings, windows_per_step
    from longvideo.sampling.distributed import rank_share
    from longvideo.sampling.hierarchy import HierarchyPlan

    if strategy == "hierarchical":
        plan = HierarchyPlan(*payload["plan"])
        levels = [plan.segments(level) for level in range(plan.depth)]
        return sum(levels), sum(max(len(rank_share(s, r, ranks)) for r in range(ranks)) for s in levels)
    settings = CoDenoiseSettings(**payload["settings"])
    steps, windows = payload["steps"], windows_per_step(settings)
    layout = round(settings.layout_share * steps) if settings.layout_share and settings.frames > settings.frames_per_window else 0
    busiest = max(len(rank_share(windows, r, ranks)) for r in range(ranks))
    return layout + (steps - layout) * windows, layout + (steps - layout) * busiest


def profiled_job(context, payload: dict) -> dict:
    """payload["job"] (hierarchy_job or co_denoise_job) as the nodes run it, returning its rank_result plus the rank's
    CPU seconds and the wall seconds it spent in collectives (all_gather, and all_reduce_sum, which gathers) from the end
    of the model build on, the span rank_result's "seconds" covers. Runs in a worker process (run_ranks)."""
    from ..sampling import distributed_launch

    profile = {"collective_seconds": 0.0, "collectives": 0, "cpu_start": time.process_time()}
    gather = context.comm.all_gather

    def timed_gather(tensor):
        start = time.perf_counter()
        try:
            return gather(tensor)
        finally:
            profile["collective_seconds"] += time.perf_counter() - start
            profile["collectives"] += 1

    context.comm.all_gather = timed_gather  # all_reduce_sum goes through it too
    build = distributed_launch.build_in_turn

    def built(rank_context, spec):
        model = build(rank_context, spec)
        profile.update(collective_seconds=0.0, collectives=0, cpu_start=time.process_time())  # the clock starts here
        return model

    distributed_launch.build_in_turn = built  # this worker's module only: the job looks it up when it calls it
    try:
        result = getattr(distributed_launch, payload["job"])(context, payload)
    finally:
        distributed_launch.build_in_turn = build
    return {**result, "cpu_seconds": time.process_time() - profile.pop("cpu_start"), **profile}


def run_split(strategy: str, payload: dict, devices: list) -> dict:
    """One video of `strategy` over one worker per device; what every rank reported, and the wall time of the run."""
    import numpy
    from longvideo.sampling.distributed_launch import run_ranks

    start = time.perf_counter()
    ranks = run_ranks(devices, "bench.distributed_scaling:profiled_job", {**payload, "job": JOBS[strategy]})
    wall = time.perf_counter() - start
    latents = numpy.asarray(ranks[0].pop("latents"))
    return {"ranks": len(devices), "wall_s": wall, "seconds": max(r["seconds"] for r in ranks),
            "cpu_seconds": max(r["cpu_seconds"] for r in ranks),
            "collective_seconds": [r["collective_seconds"] for r in ranks],
            "kb_per_step": [r["bytes_received"] / payload["steps"] / 1024 for r in ranks],
            # The share of a core each rank got while it computed (CPU seconds over its seconds outside collectives): 1
            # on a free core; less where other processes (or the other rank) took the core from it.
            "core_share": [r["cpu_seconds"] / max(r["seconds"] - r["collective_seconds"], 1e-9) for r in ranks],
            "rank_seconds": [r["seconds"] for r in ranks], "latents": latents}


def compare_split(strategy: str, payload: dict, device_lists: list[list[str]], go_on=None, repeats: int = 1) -> list[dict]:
    """`strategy` on each list of devices in turn (the first is the baseline); each row gets its speed-ups against the
    first, its work-balance limit and its max |difference| from the first's latents. `go_on(rows)`, when given, says
    before each run after the first whether to start it (a time budget). With `repeats` > 1 the lists run that many
    times in turn (1, 2, 1, 2, ...) and each keeps its fastest run: on a shared machine another job's burst then
    hits one run, not the figure."""
    best: dict[int, dict] = {}
    for number, devices in [item for _ in range(repeats) for item in enumerate(device_lists)]:
        if best and go_on is not None and not go_on(list(best.values())):
            break
        row = run_split(strategy, payload, devices)
        if number not in best or row["seconds"] < best[number]["seconds"]:
            best[number] = row
    rows = [best[number] for number in sorted(best)]
    base = rows[0]
    for row in rows:
        base_busiest, busiest = work_shares(strategy, payload, base["ranks"])[1], work_shares(strategy, payload, row["ranks"])[1]
        row.update(speedup=base["seconds"] / row["seconds"], wall_speedup=base["wall_s"] / row["wall_s"],
                   cpu_speedup=base["cpu_seconds"] / row["cpu_seconds"], limit=base_busiest / busiest,
                   max_difference=float(abs(row["latents"] - base["latents"]).max()))
    for row in rows:
        del row["latents"]
    return rows


def describe_split(strategy: str, payload: dict) -> str:
    if strategy == "hierarchical":
        keyframes, depth = payload["plan"]
        segments = "+".join(str((keyframes - 1) ** level) for level in range(depth))
        return (f"L={keyframes}, depth {depth}: {(keyframes - 1) ** depth + 1} frames, {segments} segments, batch cap "
                f"{payload['settings']['batch_cap']}, {payload['steps']} steps")
    settings = payload["settings"]
    layout = round(settings["layout_share"] * payload["steps"])
    return (f"{settings['frames']} frames, windows of {settings['frames_per_window']} overlapping {settings['overlap']}, "
            f"{payload['steps']} steps ({layout} layout)")


def split_table(results: dict) -> str:
    cells = ["strategy", "ranks", "sampling s", "speed-up", "limit", "wall s", "wall x", "CPU s", "CPU x",
             "core share", "collectives s", "KB/step/rank", "max |2 - 1|"]
    widths = [13, 6, 11, 9, 6, 8, 7, 7, 6, 12, 15, 15, 12]

    def line(values) -> str:
        return "".join(f"{v!s:>{w}}" if i else f"{v!s:<{w}}" for i, (v, w) in enumerate(zip(values, widths)))

    def listed(numbers, digits: int) -> str:
        return ", ".join(f"{n:.{digits}f}" for n in numbers)

    lines = [line(cells)]
    for strategy, rows in results.items():
        for row in rows:
            lines.append(line([
                strategy if row is rows[0] else "", row["ranks"], f"{row['seconds']:.2f}", f"{row['speedup']:.2f}",
                f"{row['limit']:.2f}", f"{row['wall_s']:.1f}", f"{row['wall_speedup']:.2f}", f"{row['cpu_seconds']:.2f}",
                f"{row['cpu_speedup']:.2f}", listed(row["core_share"], 2), listed(row["collective_seconds"], 2),
                listed(row["kb_per_step"], 1), f"{row['max_difference']:.1e}"]))
    return "\n".join(lines)


def split_part(temporary: str, quick: bool, repeats: int = 1) -> dict:
    """Hierarchical and co-denoise on 1 and 2 ranks; prints the table and returns the rows."""
    from longvideo.models.loader import load_text_to_video
    from tiny_models import CONTEXT_WIDTH, save_tiny_text_to_video

    folder = os.path.join(temporary, "split")
    if quick:
        save_tiny_text_to_video(folder)
    else:
        save_bench_model(folder)
    load_text_to_video(folder)  # a folder the ranks can load (fails here, not in a worker)
    spec = unet3d_rank_spec(folder)
    cases = SPLIT_CASES["quick" if quick else "full"]
    payloads = {"hierarchical": hierarchy_payload(spec, CONTEXT_WIDTH, **cases["hierarchical"]),
                "co-denoise": co_denoise_payload(spec, CONTEXT_WIDTH, **cases["co-denoise"])}
    model = "the tests' tiny UNet3D" if quick else "UNet3D 32/64 channels"
    print(f"split videos over gloo ranks, one torch thread per rank; {model}, "
          f"{cases['hierarchical']['latent'] * 8}x{cases['hierarchical']['latent'] * 8} pixels, CFG 7.5, DDIM; "
          f"goal: speed-up >= {GOAL}x on this 2-core machine")
    for strategy, payload in payloads.items():
        print(f"  {strategy}: {describe_split(strategy, payload)}")
    print(f"  load average before (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    results = {strategy: compare_split(strategy, payload, [["cpu"], ["cpu", "cpu"]], repeats=repeats)
               for strategy, payload in payloads.items()}
    print(split_table(results))
    print(f"  load average after (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for strategy, rows in results.items():
        two = rows[-1]
        verdict = "meets" if two["speedup"] >= GOAL else "misses"
        print(f"  {strategy}: 2 ranks {two['speedup']:.2f}x by sampling time ({verdict} the {GOAL}x goal; work-balance "
              f"limit {two['limit']:.2f}x, {two['cpu_speedup']:.2f}x by CPU time), max |2 - 1 ranks| "
              f"{two['max_difference']:.1e} ({'ok' if two['max_difference'] <= TOLERANCE else 'ABOVE'} {TOLERANCE:g})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("clip", "split"), default=["clip", "split"],
                        help="clip: clip-parallel (1-3); split: hierarchical and co-denoise over ranks (4-5)")
    parser.add_argument("--steps", type=int, default=4, help="steps of the clip-parallel throughput run")
    parser.add_argument("--frames", type=int, default=32, help="total frames of the clip-parallel throughput run")
    parser.add_argument("--quick", action="store_true", help="split videos on the tests' tiny model, tiny sizes (CI)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="split videos: run 1 and 2 ranks this many times in turn, keeping each one's fastest run")
    parser.add_argument("--json", help="also write the split-video rows here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers: one thread each
    use_repository_paths()
    from pack_import import import_pack

    import_pack()
    import torch

    torch.set_num_threads(1)  # run_ranks passes the launcher's torch thread count to CPU ranks
    with tempfile.TemporaryDirectory() as temporary:
        if "clip" in args.parts:
            clip_parallel_part(temporary, args.steps, args.frames)
        if "split" in args.parts:
            if "clip" in args.parts:
                print()
            results = split_part(temporary, args.quick, args.repeats)
            if args.json:
                with open(args.json, "w") as file:
                    json.dump({"goal": GOAL, "tolerance": TOLERANCE, "load_average": os.getloadavg(), "rows": results},
                              file, indent=1)
            if any(row["max_difference"] > TOLERANCE for rows in results.values() for row in rows):
                raise SystemExit(f"2 ranks differ from 1 rank by more than {TOLERANCE:g}")


if __name__ == "__main__":
    main()
