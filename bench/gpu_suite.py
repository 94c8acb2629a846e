"""Every GPU figure the pack needs, in one command that fits a short GPU loan: one table, also written as JSON.

    python bench/gpu_suite.py --json gpu_suite.json   # one CUDA GPU; sized to end within 8 minutes on an H200
    python bench/gpu_suite.py --rows 'comfy/*'        # ComfyUI's own Wan models alone (about 5 minutes, estimated)
    python bench/gpu_suite.py --rows 'ranks/*'        # one video over 1 .. every GPU here (up to 5 minutes a row)
    python bench/gpu_suite.py --dry-run               # the same code paths on tiny configurations on the CPU (CI)
    python bench/gpu_suite.py --list                  # the rows; --rows NAME ... runs some of them (shell patterns)

Rows, in the order they run (the most wanted first, so a short loan still gets them):

- vs_diffusers/*: our sampler against diffusers' TextToVideoSDPipeline on the ModelScope 1.7B configuration (its 1.4 B
  UNet3D, random weights, never downloaded), fp16 and bf16, 256x256x16 and 576x320x24, 30 DDIM steps with CFG 7.5:
  time ratio and frames per second (bench/sampler_overhead.py's side-by-side runs).
- continuation_fps: frames per second on one GPU for a 64-frame continuation with that UNet at 512x320, 30 steps,
  CFG, bf16, and model FLOP utilisation against the H200's dense bf16 peak (FLOPs counted by torch's FlopCounterMode
  on one model call). Anchors: Video-Infinity about 0.96 frames/s per RTX 6000 Ada; the FLOP floor of this work is
  about 16.8 frames/s on an H200.
- host_syncs: host synchronisations per step of our denoising loop (torch.cuda.set_sync_debug_mode), for DDIM,
  DPM++ 2M and Euler ancestral, and for DDIM and DPM++ 2M with known frames (frame conditioning 'replace').
- memory/continuation, memory/hierarchy: peak GPU memory above the weights for 64 against 1,024 frames (65 and 1,025 for
  the hierarchy), one step a run (memory does not depend on the steps); it should be flat but for the latents, which
  stay on the CPU.
- temporal_attention: the temporal attention modes at T = 1,024 in fp16, time and memory of one layer
  (bench/temporal_attention.py's measurement).
- hierarchy_vs_continuation: hierarchical (batched segments) against continuation for the same frames
  (bench/hierarchical_vs_continuation.py's comparison).
- option/*: each speed option on and off, side by side on the same sampling run: SDPA backends (flash, efficient,
  cuDNN, math against PyTorch's own choice), channels_last convolutions, torch.compile. The pack turns none on by
  default; each stays off until its row measures it faster.
- ranks/hierarchical, ranks/co_denoise: one video split over R worker ranks, one process per GPU over NCCL (what the
  nodes' `devices` input does), for R = 1 .. every GPU of the machine (torch.cuda.device_count()), one run after
  another, through the nodes' own jobs (sampling/distributed_launch.py's hierarchy_job and co_denoise_job, with
  bench/distributed_scaling.py's payloads and profile): the ModelScope UNet in bf16 at 512x320, 10 DDIM steps, CFG 7.5;
  hierarchical L = 5, depth 3 (65 frames: 1, 4 and 16 segments of 5 frames, batch cap 16), co-denoise 72 frames in
  windows of 16 overlapping 8 (8 windows a step; the first 4 steps are the layout window, one call). Per R: sampling
  seconds (rank_result's "seconds" of the slowest rank, counted after the model is loaded, so process start and
  loading are not in it; the whole run's wall seconds are in the JSON), speed-up against R = 1 beside its work-balance
  limit (the keyframe level's one segment and the layout window's call run on one rank while the others wait), KB each
  rank receives per step (bytes_received / steps) and max |difference| from R = 1 (the same video, but that the
  hierarchy's segment batches of other sizes may round differently in bf16). On a machine with one GPU the rows measure R = 1 only and say so.
  Each rank loads the model from a diffusers folder the row saves (about 2.8 GB) in a scratch folder the suite
  removes at its end; a rank count whose run would end past the row's 240 s is not started (the summary names it).
  They come after the option rows, so the total budget usually ends before them: run them with --rows 'ranks/*'. The
  dry run runs the same code on 1 and 2 CPU gloo ranks (one thread each) on the tiny configuration.
- comfy/*: the pack's strategies on ComfyUI's own Wan models (models/comfy_model.py) against ComfyUI's own node chain
  doing the same work on the same latents and noise, at full size: time ratio ours / ComfyUI (goal <= 1.05: the pack
  hands ComfyUI the same work, so only its own bookkeeping may cost) and max |difference| of the latents (the same
  kernels on the same inputs: 0 expected). ComfyUI's WanModel is built in the published configurations with seeded
  random weights made on the GPU (never downloaded) and loaded by comfy.sd.load_diffusion_model_state_dict, as
  UNETLoader loads a file, so ComfyUI's model management places it as it does a user's model; the VAE is ComfyUI's
  Wan 2.1 VAE class at its full size with random weights. 4 euler steps, CFG, random prompts of 512 umT5-wide (4096)
  tokens; each side is warmed up (1 step; 2 for
  the experts, so both load) and then timed twice, alternating which goes first (once for the experts, whose runs are
  long); ComfyUI's side runs its node functions, as its executor would, with progress bars off on both sides:
  - comfy/wan1.3b/continuation_chunk: Wan 2.1 1.3B (dim 1536, ffn 8960, 30 layers, 12 heads) with image input channels
    (in_dim 36: Wan 2.2 A14B I2V's and Fun InP's layout), bf16, 832x480, 81 pixel frames (21 latent frames): one
    continuation chunk with 2 known latent frames through frame conditioning 'learned' (the known frames decoded after
    the video's frames before them and handed to WanImageToVideo) against VAEDecode + WanImageToVideo + KSampler. The
    VAE decode and the encode of the whole clip are part of both sides, as they are of a real continuation.
  - comfy/wan1.3b/learned_infill: the same model and size, an infill segment whose first and last latent frames are
    known (hierarchical infill with 'learned') against VAEDecode of each end + WanFirstLastFrameToVideo + KSampler.
  - comfy/a14b/two_experts: Wan 2.2 A14B's two experts (dim 5120, ffn 13824, 40 layers, 40 heads: 14.3 B parameters,
    26.6 GiB each in bf16), both kept on the GPU, a text-to-video clip of 832x480x81, ComfyDenoiser(high,
    low_noise=low, switch_step=2) against the Wan 2.2 template's two KSamplerAdvanced (high-noise expert for the first
    2 steps returning its leftover noise, then the low-noise expert). Skipped, saying how many GiB it needs, where the
    free GPU memory does not hold both experts and the clip's activations (about 72 GiB: an 80 GB H100 does).
  The comfy rows find ComfyUI through $COMFYUI_PATH, else ../shared/comfyui beside the checkout (tests/comfy_env.py),
  else shared/comfyui inside it (what travels to a lent GPU machine); without one they fail saying so. They run last,
  in a worker of their own (importing ComfyUI changes global torch settings, e.g. reduced-precision reductions in
  SDPA's math kernel), so the suite's total budget usually ends before them: run them with --rows 'comfy/*'. The dry
  run builds the tests' tiny Wan (dim 128, 2 layers) and uses the tests' stand-in VAE.

Each row runs in a worker process under its own time budget: a row that fails is reported with its error and the
worker goes on (one that cannot run on this machine, e.g. for memory, as skipped, with what it needs); a row that runs
past its budget is killed with its worker and the next row starts in a fresh one.
The whole suite stops at its total budget (rows not reached are reported as skipped; the dry run's is two minutes: its
ranks rows start six worker processes, a few seconds each). Rows are printed as they
finish and the JSON is rewritten after each, so whatever ends the run, the finished rows are kept.
"""

import argparse
import contextlib
import dataclasses
import fnmatch
import gc
import itertools
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "@@gpu_suite "  # prefix of the worker's protocol lines on its stdout
H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM, dense (no sparsity)
ANCHORS = "Video-Infinity 0.96 frames/s per RTX 6000 Ada; FLOP floor of this work 16.8 frames/s on an H200"
FULL_TOTAL_S, DRY_TOTAL_S = 470.0, 120.0
SCRATCH_ENV = "LONGVIDEO_GPU_SUITE_SCRATCH"  # a folder the parent makes and removes: model folders for worker ranks
STARTUP_S = 120.0  # a worker's imports and CUDA start, before its first row


# ---------------------------------------------------------------------------------------------------
# measuring helpers (run in the worker)


class Bench:
    """What the rows share in one worker: the device, and the one random model built so far (rebuilt on a change)."""

    def __init__(self, device: str, dry: bool):
        import torch

        self.torch = torch
        self.device, self.dry = device, dry
        self.cuda = device.startswith("cuda")
        self._key, self._components = None, None
        self._comfy_key, self._comfy_models = None, None
        self.scratch = os.environ.get(SCRATCH_ENV)  # the parent's; a worker started alone makes its own when needed

    def components(self, config: str, dtype: str):
        """sampler_overhead.build's (unet, text model, tokenizer, vae, scheduler), built on the device directly."""
        from longvideo.bench import sampler_overhead

        if self._key != (config, dtype):
            self._components = None
            self.drop_comfy_models()
            with self.torch.device(self.device):
                self._components = sampler_overhead.build(config, sampler_overhead.DTYPES[dtype], self.device)
            self._key = (config, dtype)
        return self._components

    def rank_model_folder(self, config: str, dtype: str) -> str:
        """The model of `components` saved as a diffusers folder in the suite's scratch folder (once a suite run), for
        worker ranks to load: they start empty. The model then leaves this worker's device, which the ranks need."""
        from diffusers import TextToVideoSDPipeline

        self.scratch = self.scratch or tempfile.mkdtemp(prefix="gpu_suite-")
        folder = os.path.join(self.scratch, f"ranks-{config}-{dtype}")
        if not os.path.isdir(folder):
            unet, text_model, tokenizer, vae, scheduler = self.components(config, dtype)
            partial = folder + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            TextToVideoSDPipeline(vae=vae, text_encoder=text_model, tokenizer=tokenizer, unet=unet,
                                  scheduler=scheduler).save_pretrained(partial)
            os.replace(partial, folder)  # whole or not there, whatever stops this worker
        self._key, self._components = None, None
        self.release()
        return folder

    def denoiser(self, config: str, dtype: str):
        from longvideo.models.denoiser import UNet3DDenoiser

        unet, *_, scheduler = self.components(config, dtype)
        return UNet3DDenoiser(unet, dict(scheduler.config))

    def text(self, width: int):
        """Random prompt and negative embeddings [1, 77, width] on the CPU (the loop moves them)."""
        generator = self.torch.Generator().manual_seed(0)
        return tuple(self.torch.randn(1, 77, width, generator=generator) for _ in range(2))

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed(self, run: Callable):
        self.sync()
        start = time.perf_counter()
        result = run()
        self.sync()
        return time.perf_counter() - start, result

    def peak(self, run: Callable):
        """(seconds, result, peak device bytes above what was allocated before; None on the CPU)."""
        if not self.cuda:
            return (*self.timed(run), None)
        self.release()
        self.torch.cuda.reset_peak_memory_stats()
        base = self.torch.cuda.memory_allocated()
        seconds, result = self.timed(run)
        return seconds, result, self.torch.cuda.max_memory_allocated() - base

    def release(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def comfy_models(self, key, build: Callable) -> tuple[dict, float | None]:
        """The ComfyUI models (and VAE) that `build` makes, kept for the next row with the same `key`; one set at a time.
        Returns them and the seconds their build took (None: built for an earlier row)."""
        if self._comfy_key == key:
            return self._comfy_models, None
        self._components, self._key = None, None
        self.drop_comfy_models()
        start = time.perf_counter()
        self._comfy_models = build()
        self._comfy_key = key
        return self._comfy_models, time.perf_counter() - start

    def drop_comfy_models(self) -> None:
        """Forget the ComfyUI models built so far, out of ComfyUI's model management too (it holds the loaded ones)."""
        self._comfy_key, self._comfy_models = None, None
        if "comfy.model_management" in sys.modules:
            management = sys.modules["comfy.model_management"]
            management.unload_all_models()
            management.cleanup_models_gc()
        self.release()


def mb(value) -> str:
    return "n/a (CPU)" if value is None else f"{value / 2**20:,.0f} MB"


def continuation_settings(frames: int, frames_per_chunk: int, carried: int):
    """Chunks of `frames_per_chunk` carrying `carried` frames over that make at least `frames` frames."""
    from longvideo.sampling.continuation import ContinuationSettings

    chunks = 1 + max(0, math.ceil((frames - frames_per_chunk) / (frames_per_chunk - carried)))
    return ContinuationSettings(frames_per_chunk, chunks, carried, carried)


def count_flops(bench: Bench, denoiser, shape, width: int) -> int:
    """FLOPs of one guided model call (batch 2: unconditional and conditional) on latents of `shape`."""
    from torch.utils.flop_counter import FlopCounterMode

    torch = bench.torch
    device = denoiser.load()
    latents = torch.zeros((2 * shape[0], *shape[1:]), device=device)
    context = torch.zeros(2 * shape[0], 77, width, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        denoiser(latents, torch.tensor(500, device=device), context)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------------
# rows: each takes the Bench and its parameters and returns a dict with a one-line "summary"


def vs_diffusers(bench: Bench, *, config, dtype, width, height, frames, steps, repeats):
    from longvideo.bench import sampler_overhead

    measured = sampler_overhead.side_by_side(bench.components(config, dtype), bench.device, width=width, height=height,
                                             frames=frames, steps=steps, scheduler="ddim", repeats=repeats)
    ours, theirs = statistics.median(measured["ours"]), statistics.median(measured["diffusers"])
    return {
        "ours_s": ours, "diffusers_s": theirs, "ratio": ours / theirs, "ours_fps": frames / ours,
        "diffusers_fps": frames / theirs, "max_difference": measured["difference"], "runs": measured,
        "summary": f"ours {ours:.2f} s ({frames / ours:.2f} frames/s), diffusers {theirs:.2f} s "
                   f"({frames / theirs:.2f} frames/s), ours/diffusers {ours / theirs:.3f}; "
                   f"max |difference| {measured['difference']:.1e}",
    }


def continuation_fps(bench: Bench, *, config, dtype, width, height, frames, frames_per_chunk, carried, steps):
    from longvideo.sampling.continuation import continue_video
    from longvideo.sampling.denoise import TextGuidance

    denoiser = bench.denoiser(config, dtype)
    context_width = denoiser.context_width
    positive, negative = bench.text(context_width)
    size = (1, height // 8, width // 8)
    settings = continuation_settings(frames, frames_per_chunk, carried)
    guidance = [TextGuidance(positive, negative, 7.5)]
    warm = dataclasses.replace(settings, chunks=2)
    bench.timed(lambda: continue_video(denoiser, guidance, warm, size=size, steps=2, seed=0))
    flops = count_flops(bench, denoiser, (1, denoiser.latent_channels, frames_per_chunk, *size[1:]), context_width)
    seconds, latents = bench.timed(lambda: continue_video(denoiser, guidance, settings, size=size, steps=steps, seed=1))
    made = latents.shape[2]
    work = flops * settings.chunks * steps  # one batched (CFG) model call per chunk and step
    fps = made / seconds
    result = {"frames": made, "chunks": settings.chunks, "seconds": seconds, "fps": fps, "flops_per_call": flops,
              "tflops_per_frame": work / made / 1e12, "achieved_tflops": work / seconds / 1e12}
    if bench.cuda:
        result["mfu"] = work / seconds / (H200_BF16_DENSE_TFLOPS * 1e12)
        result["flop_floor_fps"] = H200_BF16_DENSE_TFLOPS * 1e12 / (work / made)
        utilisation = (f"MFU {result['mfu']:.1%} of {H200_BF16_DENSE_TFLOPS:.0f} TFLOPS, "
                       f"FLOP floor {result['flop_floor_fps']:.1f} frames/s")
    else:
        utilisation = "MFU n/a (CPU)"
    result["summary"] = (f"{made} frames in {seconds:.1f} s: {fps:.2f} frames/s, {result['achieved_tflops']:.1f} TFLOPS, "
                         f"{utilisation} ({ANCHORS})")
    return result


def host_syncs(bench: Bench, *, config, dtype, width, height, frames, steps):
    """Synchronising calls per step: the difference between a run of 2 * steps and one of steps, over steps."""
    from longvideo.models.denoiser import KnownFrames
    from longvideo.sampling.denoise import TextGuidance, denoise
    from longvideo.sampling.frame_conditioning import METHODS

    torch = bench.torch
    denoiser = bench.denoiser(config, dtype)
    positive, negative = bench.text(denoiser.context_width)
    shape = (1, denoiser.latent_channels, frames, height // 8, width // 8)
    known = KnownFrames([0], torch.zeros(1, shape[1], 1, *shape[3:]))
    cases = {"ddim": ("ddim", None), "dpmpp_2m": ("dpmpp_2m", None), "euler_ancestral": ("euler_ancestral", None),
             "ddim+known frames": ("ddim", "replace"), "dpmpp_2m+known frames": ("dpmpp_2m", "replace")}

    def count(scheduler, method, run_steps):
        conditioning = None if method is None else METHODS[method](known)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if bench.cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                denoise(denoiser, TextGuidance(positive, negative, 7.5), shape, steps=run_steps, seed=0,
                        scheduler=scheduler, conditioning=conditioning)
            finally:
                if bench.cuda:
                    torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    result = {}
    for name, (scheduler, method) in cases.items():
        count(scheduler, method, 1)  # warm-up
        result[name] = (count(scheduler, method, 2 * steps) - count(scheduler, method, steps)) / steps
    cells = ", ".join(f"{name} {value:g}" for name, value in result.items())
    return {"per_step": result, "summary": f"host syncs per step: {cells}" + ("" if bench.cuda else " (CPU: none to count)")}


def memory_continuation(bench: Bench, *, config, dtype, width, height, lengths, frames_per_chunk, carried, steps):
    from longvideo.sampling.continuation import continue_video
    from longvideo.sampling.denoise import TextGuidance

    denoiser = bench.denoiser(config, dtype)
    positive, negative = bench.text(denoiser.context_width)
    size = (1, height // 8, width // 8)
    rows = []
    for frames in lengths:
        settings = continuation_settings(frames, frames_per_chunk, carried)
        seconds, latents, peak = bench.peak(lambda s=settings: continue_video(
            denoiser, [TextGuidance(positive, negative, 7.5)], s, size=size, steps=steps, seed=1))
        rows.append({"frames": latents.shape[2], "seconds": seconds, "peak_bytes": peak,
                     "latents_bytes": latents.numel() * latents.element_size()})
        del latents
    return memory_summary(rows, f"{frames_per_chunk}-frame chunks carrying {carried}, {steps} steps")


def memory_hierarchy(bench: Bench, *, config, dtype, width, height, keyframes, depths, batch_cap, steps):
    from longvideo.sampling.hierarchy import HierarchyPlan, HierarchySettings, sample_hierarchy

    denoiser = bench.denoiser(config, dtype)
    positive, negative = bench.text(denoiser.context_width)
    rows = []
    for depth in depths:
        plan = HierarchyPlan(keyframes, depth)
        seconds, latents, peak = bench.peak(lambda p=plan: sample_hierarchy(
            denoiser, p, [[positive]] * p.depth, negative, 7.5, HierarchySettings(batch_cap, "replace"),
            size=(height // 8, width // 8), steps=steps, seed=1))
        rows.append({"frames": latents.shape[2], "seconds": seconds, "peak_bytes": peak,
                     "latents_bytes": latents.numel() * latents.element_size()})
        del latents
    return memory_summary(rows, f"L={keyframes}, batch cap {batch_cap}, {steps} steps")


def memory_summary(rows, how: str) -> dict:
    cells = "; ".join(f"{r['frames']} frames: {mb(r['peak_bytes'])} ({r['seconds']:.1f} s)" for r in rows)
    summary = f"peak above the weights, {how}: {cells}; latents (kept on the CPU) {mb(rows[-1]['latents_bytes'])}"
    if rows[0]["peak_bytes"]:
        summary += f"; longest/shortest peak {rows[-1]['peak_bytes'] / rows[0]['peak_bytes']:.3f}"
    return {"runs": rows, "summary": summary}


def temporal_attention(bench: Bench, *, frames, pixels, channels, dtype, repeats, modes):
    from longvideo.bench import temporal_attention as layer_bench

    args = argparse.Namespace(device=bench.device, dtype=dtype, pixels=pixels, channels=channels, repeats=repeats)
    results = {}
    for mode in modes:
        bench.release()
        results[mode] = layer_bench.measure_one(mode, frames, args)
    cells = "; ".join(f"{mode} {r['seconds'] * 1e3:.2f} ms {r['peak_mb']:,.0f} MB" for mode, r in results.items())
    note = "" if bench.cuda else " (CPU: memory is the process's peak RSS so far)"
    return {"modes": results, "summary": f"one layer, {pixels} pixels x T={frames} x {channels} ch, {dtype}: {cells}{note}"}


def hierarchy_vs_continuation(bench: Bench, *, config, dtype, width, height, keyframes, depth, steps, batch_cap):
    from longvideo.bench import hierarchical_vs_continuation as comparison

    denoiser = bench.denoiser(config, dtype)
    size = (height // 8, width // 8)
    comparison.compare(denoiser, denoiser.context_width, size, 3, 2, 1, 0)  # warm-up
    result = comparison.compare(denoiser, denoiser.context_width, size, keyframes, depth, steps, batch_cap)
    hierarchical, continuation = result["seconds"]
    return {**result, "ratio": hierarchical / continuation,
            "summary": f"{result['frames']} frames (L={keyframes}, depth {depth}, cap {result['cap']}, {steps} steps): "
                       f"hierarchical {hierarchical:.1f} s in {result['runs'][0]} runs, continuation {continuation:.1f} s "
                       f"in {result['runs'][1]} runs, hier/cont {hierarchical / continuation:.3f}"}


@contextlib.contextmanager
def sdpa_backend(denoiser, backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, backend)):
        yield denoiser


@contextlib.contextmanager
def channels_last(denoiser):
    import torch

    convolutions = [m for m in denoiser.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    for module in convolutions:
        module.to(memory_format=torch.channels_last)
    try:
        yield denoiser
    finally:
        for module in convolutions:
            module.to(memory_format=torch.contiguous_format)


def compiled(backend: str):
    """torch.compile of the UNet (built once, on the first use): the option yields a denoiser calling the compiled one.

    backend "disabled" wraps without compiling (torch.compile(disable=True)): dynamo alone takes a minute on a small CPU.
    """
    built = {}

    @contextlib.contextmanager
    def option(denoiser):
        import torch

        from longvideo.models.denoiser import UNet3DDenoiser

        if "denoiser" not in built:
            if backend == "disabled":
                unet = torch.compile(denoiser.unet, disable=True)
            else:
                unet = torch.compile(denoiser.unet, backend=backend, dynamic=False)
            built["denoiser"] = UNet3DDenoiser(unet, denoiser.scheduler_config)
        yield built["denoiser"]

    return option


def speed_option(bench: Bench, *, option, config, dtype, width, height, frames, steps, repeats, compile_backend="inductor"):
    """The same sampling run with `option` off and on, alternating after a warm-up of each."""
    from longvideo.sampling.denoise import TextGuidance, denoise

    options = {"channels_last": channels_last, "compile": compiled(compile_backend)}
    if option.startswith("sdpa_"):
        backend = option.removeprefix("sdpa_").upper()
        backend = {"FLASH": "FLASH_ATTENTION", "EFFICIENT": "EFFICIENT_ATTENTION", "CUDNN": "CUDNN_ATTENTION"}.get(backend, backend)
        options[option] = lambda d: sdpa_backend(d, backend)
    if option not in options:
        raise ValueError(f"speed option '{option}' is unknown: choose channels_last, compile or sdpa_<backend>")
    denoiser = bench.denoiser(config, dtype)
    positive, negative = bench.text(denoiser.context_width)
    shape = (1, denoiser.latent_channels, frames, height // 8, width // 8)

    def run(model):
        with bench.torch.inference_mode():
            return denoise(model, TextGuidance(positive, negative, 7.5), shape, steps=steps, seed=1)

    def run_on():
        with options[option](denoiser) as model:
            return run(model)

    bench.timed(lambda: run(denoiser))
    first_on, on_result = bench.timed(run_on)  # for compile: compilation included
    off_result = run(denoiser)
    times = {"off": [], "on": []}
    for _ in range(repeats):
        times["off"].append(bench.timed(lambda: run(denoiser))[0])
        times["on"].append(bench.timed(run_on)[0])
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    difference = (on_result - off_result).abs().max().item()
    return {"off_s": off, "on_s": on, "ratio": on / off, "first_on_s": first_on, "max_difference": difference,
            "runs": times,
            "summary": f"off {off:.3f} s, on {on:.3f} s, on/off {on / off:.3f} (first run on {first_on:.1f} s); "
                       f"max |on - off| {difference:.1e}"}


def split_over_ranks(bench: Bench, *, strategy, config, dtype, width, height, steps, max_seconds, **shape):
    """One video of `strategy` ("hierarchical" or "co-denoise") split over R worker ranks through the nodes' own jobs
    (bench/distributed_scaling.py's payloads and profiled_job around hierarchy_job and co_denoise_job), R = 1 .. every
    GPU of this machine, one after another (the dry run: 1 and 2 CPU gloo ranks, one torch thread each). The ranks load
    the suite's model from a diffusers folder saved in the suite's scratch folder. Per R: sampling seconds (rank_result's
    "seconds" of the slowest rank: model loading and process start excluded), wall seconds of the whole run, speed-up
    against R = 1, the work-balance limit, KB each rank receives per step and max |difference| from R = 1. A rank count
    whose run would end past `max_seconds` (the last run's wall time times 1.3) is not started; the summary says so."""
    from longvideo.bench import distributed_scaling as scaling

    torch = bench.torch
    started = time.perf_counter()
    folder = bench.rank_model_folder(config, dtype)
    with open(os.path.join(folder, "unet", "config.json")) as file:
        context_width = json.load(file)["cross_attention_dim"]
    spec = scaling.unet3d_rank_spec(folder, dtype)
    latent = (height // 8, width // 8)
    if strategy == "hierarchical":
        payload = scaling.hierarchy_payload(spec, context_width, latent=latent, steps=steps, **shape)
    else:
        payload = scaling.co_denoise_payload(spec, context_width, latent=latent, steps=steps, **shape)
    gpus = 0 if bench.dry else torch.cuda.device_count()
    device_lists = [["cpu"], ["cpu", "cpu"]] if bench.dry else [[f"cuda:{i}" for i in range(r)] for r in range(1, gpus + 1)]

    def go_on(rows) -> bool:
        return time.perf_counter() - started + 1.3 * rows[-1]["wall_s"] <= max_seconds

    rows = scaling.compare_split(strategy, payload, device_lists, go_on)
    left_out = [len(devices) for devices in device_lists[len(rows):]]
    split = rows[1:]
    cells = [f"R=1 {rows[0]['seconds']:.2f} s"]
    cells += [f"R={r['ranks']} {r['seconds']:.2f} s {r['speedup']:.2f}x (limit {r['limit']:.2f}, "
              f"{max(r['kb_per_step']):,.0f} KB/step/rank, max |R - 1| {r['max_difference']:.1e})" for r in split]
    note = ""
    if not bench.dry and gpus == 1:
        note = "; this machine has one GPU: R = 1 only"
    if left_out:
        note += f"; R = {', '.join(map(str, left_out))} not started (row time {max_seconds:.0f} s)"
    what = scaling.describe_split(strategy, payload)
    where = "CPU gloo ranks" if bench.dry else "GPUs, NCCL"
    return {"runs": rows, "gpus": gpus, "left_out": left_out,
            "max_difference": max((r["max_difference"] for r in split), default=None),
            "summary": f"{strategy}, {what}, {width}x{height}, {config} {dtype}, {where}: {'; '.join(cells)}{note}"}


# ---------------------------------------------------------------------------------------------------
# ComfyUI's own video models: our strategies (models/comfy_model.py) against ComfyUI's node chains on the same latents


class Skipped(Exception):
    """A row that cannot run on this machine (too little memory): reported as skipped with the reason, not failed."""


# ComfyUI's WanModel in the published configurations (ComfyUI's detection reads them back off the weights: heads =
# dim / 128, text width 4096, freq_dim 256, the input channels and the layer count).
WAN_CONFIGS = {
    "wan2.1-1.3b": dict(dim=1536, ffn_dim=8960, num_layers=30, name="Wan 2.1 1.3B"),
    "wan2.2-a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, name="Wan 2.2 A14B expert"),
    "tiny": dict(dim=128, ffn_dim=256, num_layers=2, name="tiny Wan"),  # as tests/comfy_env.save_tiny_wan21
}
COMFY_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
GiB = 2**30


def comfyui_location() -> str:
    """The ComfyUI checkout: $COMFYUI_PATH, else ../shared/comfyui beside the repository (as tests/comfy_env.py finds
    it), else shared/comfyui inside it (a shared/ folder inside the checkout is what travels to a lent GPU machine)."""
    given = os.environ.get("COMFYUI_PATH")
    candidates = [given] if given else [os.path.join(os.path.dirname(ROOT), "shared", "comfyui"),
                                        os.path.join(ROOT, "shared", "comfyui")]
    for path in candidates:
        if os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
            return path
    if given:
        raise RuntimeError(f"ComfyUI was not found: COMFYUI_PATH={given} is not a ComfyUI checkout (it has no "
                           "comfy/model_management.py)")
    raise RuntimeError("ComfyUI was not found: the comfy/* rows run ComfyUI's own models and nodes; set COMFYUI_PATH to a "
                       "ComfyUI checkout, or put one at ../shared/comfyui beside the repository or shared/comfyui inside it")


def import_comfyui(cpu: bool) -> None:
    """Import ComfyUI in this worker: its top-level `nodes` first on the path (before the pack's own `nodes/`), a
    stand-in for torchvision where none is installed (tests/comfy_env.py), its device choice forced to the CPU for the
    dry run and left to ComfyUI on the GPU (the CUDA device, its normal VRAM management), progress bars off."""
    os.environ["COMFYUI_PATH"] = comfyui_location()
    import comfy_env

    if cpu:
        comfy_env.import_comfy()
    else:
        path = comfy_env.comfyui_path()
        sys.path[:] = [path] + [entry for entry in sys.path if entry != path]
        comfy_env.install_torchvision_stand_in()
        import comfy.model_management
        import comfy.sd  # noqa: F401

        if comfy.model_management.get_torch_device().type != "cuda":
            raise RuntimeError(f"ComfyUI chose {comfy.model_management.get_torch_device()}, not the CUDA GPU")
    comfy_nodes()
    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)  # no tqdm bars on ComfyUI's side (ours runs without one here)


def comfy_nodes():
    """ComfyUI's own `nodes` module (KSampler, VAEDecode, ...), never the pack's `nodes/` package of the same name."""
    import nodes

    home = os.path.realpath(os.environ["COMFYUI_PATH"]) + os.sep
    if not os.path.realpath(nodes.__file__).startswith(home):
        raise RuntimeError(f"'import nodes' found {nodes.__file__}, not ComfyUI's nodes.py")
    return nodes


def wan_layout(wan: str, in_dim: int, layers: int | None = None) -> dict:
    """Names and shapes of ComfyUI's WanModel's weights in configuration `wan` (a state dict of meta tensors)."""
    import comfy.ops
    import torch
    from comfy.ldm.wan.model import WanModel

    config = WAN_CONFIGS[wan]
    with torch.device("meta"):
        model = WanModel(model_type="t2v", dim=config["dim"], ffn_dim=config["ffn_dim"], num_heads=config["dim"] // 128,
                         num_layers=layers or config["num_layers"], in_dim=in_dim, out_dim=16, text_dim=4096,
                         freq_dim=256, operations=comfy.ops.disable_weight_init)
    return model.state_dict()


def fill_random(name: str, tensor, generator) -> None:
    """Seeded random values for one weight (ComfyUI's ops skip initialisation): fan-in scaled weights, so activations
    stay of order 1 through every layer in bf16; norms at 1; biases and the adaLN modulation tables small."""
    if name.endswith("modulation"):
        tensor.normal_(0.0, tensor.shape[-1] ** -0.5, generator=generator)
    elif tensor.dim() > 1:
        tensor.normal_(0.0, tensor[0].numel() ** -0.5, generator=generator)
    elif "norm" in name and name.endswith("weight"):
        tensor.fill_(1.0)
    else:
        tensor.normal_(0.0, 0.02, generator=generator)


def random_wan(bench: Bench, wan: str, *, in_dim: int, dtype: str, seed: int, layers: int | None = None):
    """ComfyUI's MODEL of a Wan DiT in configuration `wan` with seeded random weights, made as UNETLoader makes it from a
    file: the state dict (built here on the device, never downloaded) goes through comfy.sd.load_diffusion_model_state_dict,
    which detects the model from its keys and shapes and loads it onto ComfyUI's offload device; ComfyUI's model
    management moves it onto the GPU when it samples, as for a user's model."""
    import comfy.sd

    torch = bench.torch
    precision = getattr(torch, COMFY_DTYPES[dtype])
    generator = torch.Generator(bench.device).manual_seed(seed)
    state = {}
    for name, meta in wan_layout(wan, in_dim, layers).items():
        state[name] = torch.empty(meta.shape, dtype=precision, device=bench.device)
        fill_random(name, state[name], generator)
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": precision})
    if model is None:
        raise RuntimeError(f"ComfyUI did not recognise the {WAN_CONFIGS[wan]['name']} state dict")
    return model


def random_vae(kind: str):
    """ComfyUI's Wan 2.1 VAE class at its fixed full size with seeded random weights ("wan2.1"; comfy.sd.VAE builds it from
    the state dict and places it itself), or the tests' cheap stand-in with ComfyUI's VAE interface ("stand-in")."""
    import comfy_env

    if kind == "stand-in":
        return comfy_env.StandInVideoVAE(16, 8, 4)
    import comfy.sd

    return comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state())


def node_outputs(result) -> tuple:
    """A ComfyUI node's outputs as a tuple (V1 nodes and V3 io.ComfyNode alike)."""
    return tuple(result.args if hasattr(result, "args") else result)


def comfy_text(bench: Bench, tokens: int):
    """Random prompt and negative token embeddings [1, tokens, 4096] (umT5's width) on the CPU, as tensors and as
    ComfyUI CONDITIONING."""
    generator = bench.torch.Generator().manual_seed(0)
    positive, negative = (bench.torch.randn(1, tokens, 4096, generator=generator) for _ in range(2))
    return positive, negative, [[positive, {}]], [[negative, {}]]


def comfy_side_by_side(bench: Bench, ours: Callable, theirs: Callable, *, steps: int, warm_steps: int, repeats: int) -> dict:
    """Both sides once at `warm_steps` (the warm-up: ComfyUI moves the models onto the GPU, kernels are chosen), then
    `repeats` timed runs of each at `steps`, alternating (ours first, then ComfyUI first, ...); the latents of the first
    timed pair are compared."""
    torch = bench.torch
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        bench.timed(lambda: ours(warm_steps))
        bench.timed(lambda: theirs(warm_steps))
        if bench.cuda:
            torch.cuda.reset_peak_memory_stats()
        times, latents = {"ours": [], "comfy": []}, {}
        for repeat in range(repeats):
            for side in ("ours", "comfy")[:: -1 if repeat % 2 else 1]:
                seconds, latents[side] = bench.timed(lambda s=side: (ours if s == "ours" else theirs)(steps))
                times[side].append(seconds)
            if repeat == 0:
                mine, reference = latents["ours"].float(), latents["comfy"].float()
                difference = (mine - reference).abs().max().item()
                magnitude = mine.abs().mean().item()  # the latents are not trivially alike (all zero, say)
            latents.clear()
    a, b = statistics.median(times["ours"]), statistics.median(times["comfy"])
    return {"ours_s": a, "comfy_s": b, "ratio": a / b, "max_difference": difference, "mean_abs": magnitude, "runs": times,
            "peak_bytes": torch.cuda.max_memory_allocated() if bench.cuda else None}


def parameter_count(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e8 else f"{count / 1e6:.1f} M"


def comfy_summary(result: dict, what: str) -> str:
    peak = "" if result["peak_bytes"] is None else f", peak GPU memory {result['peak_bytes'] / GiB:.1f} GiB"
    built = "the row before's models" if result["build_s"] is None else f"models built in {result['build_s']:.0f} s"
    return (f"{what}: ours {result['ours_s']:.2f} s, ComfyUI {result['comfy_s']:.2f} s, ours/ComfyUI {result['ratio']:.3f}; "
            f"max |difference| {result['max_difference']:.1e}{peak} ({built})")


def comfy_learned(bench: Bench, *, kind, wan, dtype, vae, width, height, frames, known, steps, cfg, tokens, repeats, seed=1):
    """One clip with known frames through frame conditioning 'learned' on a Wan with image input channels (4 mask + 16
    image channels: Wan 2.2 A14B I2V's and Fun InP's layout; in_dim 36), against ComfyUI's own chain on the same latents:

    - kind "continuation": a continuation chunk of `frames` latent frames whose first `known` are the video's last ones
      (continue_video with that video as its start, one chunk) against VAEDecode of the video's last frames (the known
      ones and the context before them), its last 4 (known - 1) + 1 pixel frames as WanImageToVideo's start image, and
      KSampler with the chunk's seed;
    - kind "infill": an infill segment whose first and last latent frames are known (denoise with
      LearnedConditioning(KnownFrames([0, frames - 1], ends))) against VAEDecode of each end, WanFirstLastFrameToVideo and
      KSampler.
    The VAE decode of the known frames and the encode of the whole clip (inside the Wan node) are part of both sides.
    """
    import_comfyui(cpu=not bench.cuda)
    from comfy_extras.nodes_wan import WanFirstLastFrameToVideo, WanImageToVideo

    from longvideo.models.comfy_model import ComfyDenoiser
    from longvideo.models.denoiser import KnownFrames
    from longvideo.sampling import continuation
    from longvideo.sampling.denoise import TextGuidance, denoise
    from longvideo.sampling.frame_conditioning import LearnedConditioning

    torch = bench.torch
    with torch.inference_mode():  # as ComfyUI's executor runs UNETLoader and VAELoader
        built, build_s = bench.comfy_models(("learned", wan, dtype, vae), lambda: {
            "model": random_wan(bench, wan, in_dim=36, dtype=dtype, seed=0), "vae": random_vae(vae)})
    model, image_vae = built["model"], built["vae"]
    nodes = comfy_nodes()
    positive, negative, *text = comfy_text(bench, tokens)
    guidance = TextGuidance(positive, negative, cfg)
    denoiser = ComfyDenoiser(model, vae=image_vae)
    size, length = (height // 8, width // 8), 4 * (frames - 1) + 1
    generator = torch.Generator().manual_seed(2)

    def ksampler(seed_, run_steps, p, n, latent):
        return nodes.KSampler().sample(model, seed_, run_steps, cfg, "euler", "simple", p, n, latent)[0]["samples"]

    if kind == "continuation":
        # The video so far: the `known` frames to carry over and the context frames before them.
        video = torch.randn(1, 16, known + continuation.CONTEXT_FRAMES, *size, generator=generator)
        settings = continuation.ContinuationSettings(frames, 1, known, known, "learned")

        def ours(run_steps):
            made = continuation.continue_video(denoiser, [guidance], settings, size=(1, *size), steps=run_steps,
                                               seed=seed, scheduler="euler", start=video)
            return made[:, :, video.shape[2]:]

        def theirs(run_steps):
            (pixels,) = nodes.VAEDecode().decode(image_vae, {"samples": video})
            p, n, latent = node_outputs(WanImageToVideo.execute(*text, image_vae, width, height, length, 1,
                                                                start_image=pixels[-(4 * (known - 1) + 1):]))
            return ksampler(continuation.chunk_seed(seed, 0), run_steps, p, n, latent)[:, :, known:]

        what = f"continuation chunk, {known} of {frames} latent frames known (WanImageToVideo)"
    elif kind == "infill":
        ends = torch.randn(1, 16, 2, *size, generator=generator)

        def ours(run_steps):
            return denoise(denoiser, guidance, (1, 16, frames, *size), steps=run_steps, seed=seed, scheduler="euler",
                           conditioning=LearnedConditioning(KnownFrames([0, frames - 1], ends)))

        def theirs(run_steps):
            (start,) = nodes.VAEDecode().decode(image_vae, {"samples": ends[:, :, :1]})
            (end,) = nodes.VAEDecode().decode(image_vae, {"samples": ends[:, :, 1:]})
            p, n, latent = node_outputs(WanFirstLastFrameToVideo.execute(*text, image_vae, width, height, length, 1,
                                                                         start_image=start, end_image=end))
            return ksampler(seed, run_steps, p, n, latent)

        what = f"infill segment, first and last of {frames} latent frames known (WanFirstLastFrameToVideo)"
    else:
        raise ValueError(f"kind '{kind}' is neither 'continuation' nor 'infill'")
    result = comfy_side_by_side(bench, ours, theirs, steps=steps, warm_steps=1, repeats=repeats)
    parameters = sum(p.numel() for p in model.model.diffusion_model.parameters())
    result.update(build_s=build_s, parameters=parameters, pixel_frames=length, latent_frames=frames)
    vae_name = "Wan 2.1 VAE (random weights)" if vae != "stand-in" else "stand-in VAE"
    result["summary"] = comfy_summary(result, (
        f"{WAN_CONFIGS[wan]['name']} with image channels ({parameter_count(parameters)} parameters, {dtype}), {width}x{height}x"
        f"{length}, {what}, {steps} euler steps, CFG {cfg}, {vae_name}"))
    return result


def comfy_two_experts(bench: Bench, *, wan, dtype, width, height, frames, steps, cfg, tokens, repeats, layers=None,
                      seed=1, shift=8.0):
    """Wan 2.2 A14B's two experts (text-to-video), each patched with ModelSamplingSD3 (shift 8) as ComfyUI's Wan 2.2
    template does: ComfyDenoiser(high, low_noise=low, switch_step=steps // 2) against the template's chain on the same
    noise, KSamplerAdvanced on the high-noise expert for the first steps returning its leftover noise, then
    KSamplerAdvanced on the low-noise expert. Both experts stay on the GPU (bf16: about 2 x 26.6 GiB); where the free
    memory does not hold them and the clip's activations, the row is skipped and says how much it needs. `layers` below
    the configuration's count builds shorter experts (named so in the summary)."""
    import_comfyui(cpu=not bench.cuda)
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from longvideo.models.comfy_model import ComfyDenoiser
    from longvideo.sampling.denoise import TextGuidance, denoise

    torch = bench.torch
    config = WAN_CONFIGS[wan]
    key = ("two experts", wan, dtype, layers)
    if bench.cuda and bench._comfy_key != key:
        bench.drop_comfy_models()
        import psutil

        layout = wan_layout(wan, 16, layers)
        weights = sum(t.numel() for t in layout.values()) * getattr(torch, COMFY_DTYPES[dtype]).itemsize
        # ComfyUI's own estimate of a guided batch's activations (BaseModel.memory_required: area x dtype size x 0.01 x
        # memory_usage_factor MiB, Wan's factor dim / 2222), with its 1.5 margin for batching cond and uncond, and its
        # minimum inference memory.
        area = 2 * frames * (height // 8) * (width // 8)
        activations = area * 2 * 0.01 * config["dim"] / 2222 * 2**20 * 1.5 + 1.2 * GiB
        needs, free = 2 * weights + activations, torch.cuda.mem_get_info()[0]
        if free < needs:
            raise Skipped(f"needs {needs / GiB:.0f} GiB of free GPU memory (two {dtype} experts of {weights / GiB:.1f} GiB "
                          f"and {activations / GiB:.0f} GiB for the clip), {free / GiB:.0f} GiB free")
        available = psutil.virtual_memory().available
        if available < 2 * weights + 4 * GiB:
            raise Skipped(f"needs {(2 * weights + 4 * GiB) / GiB:.0f} GiB of free CPU memory to load the two experts as "
                          f"ComfyUI does (onto its offload device first), {available / GiB:.0f} GiB free")

    def build():
        experts = [ModelSamplingSD3().patch(random_wan(bench, wan, in_dim=16, dtype=dtype, seed=s, layers=layers), shift)[0]
                   for s in (1, 2)]
        bench.release()  # the state dicts made on the GPU are gone: hand their memory back before ComfyUI loads the experts
        return {"high": experts[0], "low": experts[1]}

    with torch.inference_mode():  # as ComfyUI's executor runs UNETLoader and ModelSamplingSD3
        built, build_s = bench.comfy_models(key, build)
    high, low = built["high"], built["low"]
    nodes = comfy_nodes()
    positive, negative, *text = comfy_text(bench, tokens)
    guidance = TextGuidance(positive, negative, cfg)
    shape = (1, 16, frames, height // 8, width // 8)

    def ours(run_steps):
        denoiser = ComfyDenoiser(high, low_noise=low, switch_step=run_steps // 2)
        return denoise(denoiser, guidance, shape, steps=run_steps, seed=seed, scheduler="euler")

    def theirs(run_steps):
        split, advanced = run_steps // 2, nodes.KSamplerAdvanced()
        (mid,) = advanced.sample(high, "enable", seed, run_steps, cfg, "euler", "simple", *text,
                                 {"samples": torch.zeros(shape)}, 0, split, "enable")
        (out,) = advanced.sample(low, "disable", seed, run_steps, cfg, "euler", "simple", *text, mid, split, 10000,
                                 "disable")
        return out["samples"]

    result = comfy_side_by_side(bench, ours, theirs, steps=steps, warm_steps=2, repeats=repeats)
    parameters = sum(p.numel() for p in high.model.diffusion_model.parameters())
    length = 4 * (frames - 1) + 1
    result.update(build_s=build_s, parameters_per_expert=parameters, pixel_frames=length, latent_frames=frames)
    shorter = "" if not layers or layers == config["num_layers"] else f", {layers} of its {config['num_layers']} layers only"
    result["summary"] = comfy_summary(result, (
        f"two {config['name']}s ({parameter_count(parameters)} parameters each, {dtype}{shorter}), {width}x{height}x{length} "
        f"({frames} latent frames), {steps} euler steps switching at {steps // 2}, CFG {cfg}"))
    return result


# ---------------------------------------------------------------------------------------------------
# the rows of the full suite and of the dry run


@dataclasses.dataclass
class Row:
    name: str
    function: Callable
    full: dict | None  # parameters on the GPU; None: not in the full suite
    dry: dict | None  # parameters of the dry run; None: not in the dry run
    budget_s: float  # on the GPU
    worker: str = "pack"  # rows of another kind start in a fresh worker (ComfyUI's imports change global torch settings)
    dry_budget_s: float | None = None  # in the dry run; None: DRY_ROW_S

    def budget(self, dry: bool) -> float:
        return (self.dry_budget_s or DRY_ROW_S) if dry else self.budget_s


DRY_ROW_S = 40.0
MODEL = dict(config="modelscope")
TINY = dict(config="tiny", dtype="fp32")


def _rows() -> list[Row]:
    rows = []
    for dtype in ("fp16", "bf16"):
        # The larger size is timed once after its warm-ups: long runs on a GPU vary little, and time is short.
        for width, height, frames, repeats, budget in ((256, 256, 16, 2, 50), (576, 320, 24, 1, 80)):
            rows.append(Row(f"vs_diffusers/{dtype}/{width}x{height}x{frames}", vs_diffusers,
                            dict(MODEL, dtype=dtype, width=width, height=height, frames=frames, steps=30, repeats=repeats),
                            dict(TINY, dtype=dtype, width=32, height=32, frames=2, steps=2, repeats=1) if width == 256 else None,
                            budget))
    rows += [
        Row("continuation_fps", continuation_fps,
            dict(MODEL, dtype="bf16", width=512, height=320, frames=64, frames_per_chunk=16, carried=4, steps=30),
            dict(TINY, width=32, height=32, frames=10, frames_per_chunk=4, carried=1, steps=2), 80),
        Row("host_syncs", host_syncs, dict(MODEL, dtype="bf16", width=512, height=320, frames=16, steps=4),
            dict(TINY, width=32, height=32, frames=2, steps=1), 40),
        Row("memory/continuation", memory_continuation,
            dict(MODEL, dtype="bf16", width=512, height=320, lengths=(64, 1024), frames_per_chunk=16, carried=4, steps=1),
            dict(TINY, width=32, height=32, lengths=(6, 12), frames_per_chunk=4, carried=1, steps=1), 80),
        Row("memory/hierarchy", memory_hierarchy,
            dict(MODEL, dtype="bf16", width=512, height=320, keyframes=5, depths=(3, 5), batch_cap=16, steps=1),
            dict(TINY, width=32, height=32, keyframes=3, depths=(2, 3), batch_cap=2, steps=1), 80),
        Row("temporal_attention/T=1024", temporal_attention,
            dict(frames=1024, pixels=256, channels=320, dtype="fp16", repeats=3,
                 modes=("full", "window", "dual_scope", "eager-full")),
            dict(frames=16, pixels=4, channels=32, dtype="fp32", repeats=1,
                 modes=("full", "window", "dual_scope", "eager-full")), 45),
        Row("hierarchy_vs_continuation", hierarchy_vs_continuation,
            dict(MODEL, dtype="bf16", width=512, height=320, keyframes=17, depth=2, steps=5, batch_cap=16),
            dict(TINY, width=32, height=32, keyframes=3, depth=2, steps=1, batch_cap=0), 70),
    ]
    on_gpu = dict(MODEL, dtype="bf16", width=512, height=320, frames=16, steps=5, repeats=2)
    on_cpu = dict(TINY, width=32, height=32, frames=2, steps=1, repeats=1)
    for backend in ("flash", "efficient", "cudnn", "math"):
        # The CPU has flash and math kernels only.
        rows.append(Row(f"option/sdpa_{backend}", speed_option, dict(on_gpu, option=f"sdpa_{backend}"),
                        dict(on_cpu, option=f"sdpa_{backend}") if backend in ("flash", "math") else None, 30))
    rows.append(Row("option/channels_last", speed_option, dict(on_gpu, option="channels_last"),
                    dict(on_cpu, option="channels_last"), 30))
    # The dry run wraps without compiling: tracing even the tiny UNet takes about a minute on a small CPU.
    rows.append(Row("option/compile", speed_option, dict(on_gpu, option="compile"),
                    dict(on_cpu, option="compile", compile_backend="disabled"), 170))
    # One video split over R = 1 .. every GPU here (the dry run: 1 and 2 CPU gloo ranks); a run that would end past
    # max_seconds is not started, the row's budget is the hard stop.
    for strategy, name, full, dry in (
            ("hierarchical", "ranks/hierarchical",
             dict(keyframes=5, depth=3, batch_cap=16, steps=10), dict(keyframes=3, depth=2, batch_cap=1, steps=2)),
            ("co-denoise", "ranks/co_denoise",
             dict(frames=72, window=16, overlap=8, layout_share=0.4, steps=10),
             dict(frames=12, window=4, overlap=2, layout_share=0.4, steps=3))):
        rows.append(Row(name, split_over_ranks,
                        dict(MODEL, dtype="bf16", width=512, height=320, strategy=strategy, max_seconds=240, **full),
                        dict(TINY, width=32, height=32, strategy=strategy, max_seconds=80, **dry), 300, dry_budget_s=90))
    # ComfyUI's own Wan models with random weights at full size (832x480, 81 pixel frames), few steps; the dry run builds
    # the tests' tiny Wan and uses the stand-in VAE.
    wan_gpu = dict(wan="wan2.1-1.3b", dtype="bf16", vae="wan2.1", width=832, height=480, frames=21, known=2, steps=4,
                   cfg=5.0, tokens=512, repeats=2)
    wan_cpu = dict(wan="tiny", dtype="fp32", vae="stand-in", width=16, height=16, frames=4, known=2, steps=2, cfg=5.0,
                   tokens=8, repeats=2)
    for kind, name, budget in (("continuation", "continuation_chunk", 150), ("infill", "learned_infill", 100)):
        rows.append(Row(f"comfy/wan1.3b/{name}", comfy_learned, dict(wan_gpu, kind=kind), dict(wan_cpu, kind=kind), budget,
                        worker="comfy"))
    rows.append(Row("comfy/a14b/two_experts", comfy_two_experts,
                    dict(wan="wan2.2-a14b", dtype="bf16", width=832, height=480, frames=21, steps=4, cfg=3.5, tokens=512,
                         repeats=1),
                    dict(wan="tiny", dtype="fp32", width=16, height=16, frames=3, steps=2, cfg=3.5, tokens=8, repeats=2),
                    300, worker="comfy"))
    return rows


ROWS = {row.name: row for row in _rows()}


def selected_rows(dry: bool, names: list[str] | None) -> list[Row]:
    """The rows of the dry run or of the GPU suite, in their order; `names` picks some (shell patterns: 'comfy/*')."""
    available = [row for row in ROWS.values() if (row.dry if dry else row.full) is not None]
    if not names:
        return available
    unknown = [name for name in names if not any(fnmatch.fnmatchcase(row.name, name) for row in available)]
    if unknown:
        raise SystemExit(f"unknown rows {unknown} for the {'dry run' if dry else 'GPU suite'}: "
                         f"choose from {', '.join(row.name for row in available)}")
    return [row for row in available if any(fnmatch.fnmatchcase(row.name, name) for name in names)]


# ---------------------------------------------------------------------------------------------------
# the worker: runs rows one after another, one protocol line before and after each


def emit(event: dict) -> None:
    print(MARK + json.dumps(event), flush=True)


def worker(names: list[str], dry: bool, inject: dict[str, str]) -> None:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from pack_import import import_pack

    import_pack()
    import torch

    if any(ROWS[name].worker == "pack" for name in names):
        from diffusers import TextToVideoSDPipeline, UNet3DConditionModel  # noqa: F401  (here, not in a row's time)
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    torch.set_grad_enabled(False)
    if dry:
        torch.set_num_threads(1)  # tiny models: more threads only wait on each other, badly so on a busy machine
    elif not torch.cuda.is_available():
        raise SystemExit("the GPU suite needs a CUDA GPU: use --dry-run on the CPU")
    emit({"event": "machine", "text": describe_machine(dry)})
    bench = Bench("cpu" if dry else "cuda", dry)
    for name in names:
        row = ROWS[name]
        emit({"event": "start", "row": name})
        start = time.perf_counter()
        try:
            if inject.get(name) == "fail":
                raise RuntimeError("injected failure")
            if inject.get(name) == "hang":
                time.sleep(3600)
            if inject.get(name) == "skip":
                raise Skipped("injected: needs more than this machine has")
            result = row.function(bench, **(row.dry if dry else row.full))
            emit({"event": "done", "row": name, "status": "ok", "seconds": time.perf_counter() - start,
                  "summary": result.pop("summary"), "result": result})
        except Skipped as reason:  # this machine cannot run the row (memory): say what it needs
            emit({"event": "done", "row": name, "status": "skipped", "seconds": time.perf_counter() - start,
                  "error": f"skipped: {reason}"})
        except Exception as error:  # a row's failure is its own: report it and go on with the next
            traceback.print_exc()
            emit({"event": "done", "row": name, "status": "failed", "seconds": time.perf_counter() - start,
                  "error": f"{type(error).__name__}: {error}"[:400]})
        finally:
            bench.release()


# ---------------------------------------------------------------------------------------------------
# the parent: starts workers, enforces the budgets, prints the table, writes the JSON


class Worker:
    """A worker process in its own process group, its protocol lines in a queue and its last stderr lines kept."""

    def __init__(self, names: list[str], dry: bool, inject: list[str]):
        command = [sys.executable, os.path.abspath(__file__), "--worker", *names]
        command += ["--dry-run"] if dry else []
        for item in inject:
            command += ["--inject", item]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.events: queue.Queue = queue.Queue()
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            if line.startswith(MARK):
                self.events.put(json.loads(line[len(MARK):]))
            else:
                sys.stderr.write(line)
        self.events.put(None)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            sys.stderr.write(line)
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-6:]

    def next_event(self, timeout: float):
        """The next protocol event, None when the worker ended, or "timeout"."""
        try:
            return self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return "timeout"

    def kill(self) -> None:
        """End the worker's process group (compile workers and the like go with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def exit_reason(self) -> str:
        self.process.wait()
        tail = " | ".join(line for line in self.stderr_tail if line)[-300:]
        return f"worker exited with code {self.process.returncode}" + (f": {tail}" if tail else "")


def run_suite(rows: list[Row], dry: bool, deadline: float, row_budget_s: float | None, inject: list[str],
              report: Callable[[dict], None], on_machine: Callable[[str], None]) -> list[dict]:
    """Run `rows` in workers, each row under its budget and all before `deadline` (time.monotonic()); `report` gets
    each row's outcome as it comes, `on_machine` each worker's description of the machine."""
    pending = [row.name for row in rows]
    results: dict[str, dict] = {}

    def budget(name: str) -> float:
        return row_budget_s or ROWS[name].budget(dry)

    def finish(name: str, outcome: dict) -> None:
        results[name] = {"row": name, "budget_s": budget(name), **outcome}
        pending.remove(name)
        report(results[name])

    while pending:
        # One worker runs the next rows of one kind; rows of another kind start in a fresh one.
        kind = ROWS[pending[0]].worker
        batch = list(itertools.takewhile(lambda n: ROWS[n].worker == kind, pending))
        worker = Worker(batch, dry, inject)
        first = True
        while pending and pending[0] in batch:
            name = pending[0]
            event = worker.next_event(min(STARTUP_S if first else 30.0, deadline - time.monotonic()))
            if isinstance(event, dict) and event["event"] == "machine":
                on_machine(event["text"])
                event = worker.next_event(min(STARTUP_S, deadline - time.monotonic()))
            if not isinstance(event, dict):  # no row started: out of time, or the worker died or hung between rows
                worker.kill()
                if time.monotonic() >= deadline:
                    for rest in list(pending):
                        finish(rest, {"status": "skipped", "seconds": 0.0, "error": "suite time budget spent"})
                elif first:  # a worker that cannot start a row fails every row it was given
                    reason = "worker did not start in time" if event == "timeout" else worker.exit_reason()
                    for rest in [n for n in pending if n in batch]:
                        finish(rest, {"status": "failed", "seconds": 0.0, "error": reason})
                break
            first = False
            start = time.monotonic()
            row_deadline = min(start + budget(name), deadline)
            event = worker.next_event(row_deadline - time.monotonic())
            if isinstance(event, dict):
                finish(name, {key: value for key, value in event.items() if key not in ("event", "row")})
                continue
            if event == "timeout":
                worker.kill()
                error = (f"timed out after its {budget(name):.0f} s budget" if row_deadline < deadline
                         else "stopped when the suite's time budget ran out")
                finish(name, {"status": "timed out", "seconds": time.monotonic() - start, "error": error})
            else:
                finish(name, {"status": "failed", "seconds": time.monotonic() - start, "error": worker.exit_reason()})
            break  # the next rows start in a fresh worker
        worker.kill()
    return [results[row.name] for row in rows]


def describe_machine(dry: bool) -> str:
    import torch

    if dry:
        return f"dry run on the CPU (torch {torch.__version__}): tiny configurations, figures not meaningful"
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def table_line(result: dict) -> str:
    text = result.get("summary") or result.get("error", "")
    return f"{result['row']:<32} {result['status']:<10} {result['seconds']:7.1f}  {text}"


def main() -> None:
    begin = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny configurations on the CPU (what CI runs)")
    parser.add_argument("--rows", nargs="+", metavar="NAME", help="run only these rows (see --list)")
    parser.add_argument("--list", action="store_true", help="print the rows and their budgets, then stop")
    parser.add_argument("--json", default="gpu_suite.json", help="where to write the results (rewritten after each row)")
    parser.add_argument("--total-budget", type=float, help="seconds for the whole suite "
                        f"(default {FULL_TOTAL_S:.0f} on the GPU, {DRY_TOTAL_S:.0f} for the dry run)")
    parser.add_argument("--row-budget", type=float, help="seconds for every row instead of each row's own budget")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--inject", action="append", default=[], help=argparse.SUPPRESS)  # KIND:ROW, KIND fail, hang or skip
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.dry_run, dict(reversed(item.split(":", 1)) for item in args.inject))
        return

    rows = selected_rows(args.dry_run, args.rows)
    if args.list:
        for row in rows:
            print(f"{row.name:<32} budget {row.budget(args.dry_run):5.0f} s")
        return
    total = args.total_budget or (DRY_TOTAL_S if args.dry_run else FULL_TOTAL_S)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    document = {"machine": None, "dry_run": args.dry_run, "started": started, "total_budget_s": total, "rows": []}
    print(f"GPU suite{' (dry run)' if args.dry_run else ''}, started {started}, total budget {total:.0f} s", flush=True)

    def write() -> None:
        document["seconds"] = time.monotonic() - begin
        with open(args.json, "w") as file:
            json.dump(document, file, indent=1)

    def on_machine(text: str) -> None:
        if document["machine"] is None:
            document["machine"] = text
            print(text, flush=True)
            print(f"{'row':<32} {'status':<10} {'s':>7}  result", flush=True)

    def report(result: dict) -> None:
        document["rows"].append(result)
        print(table_line(result), flush=True)
        write()

    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as scratch:  # removed whatever ended the workers
        os.environ[SCRATCH_ENV] = scratch
        results = run_suite(rows, args.dry_run, begin + total, args.row_budget, args.inject, report, on_machine)
    document["rows"] = results
    write()
    print(f"\n{sum(r['status'] == 'ok' for r in results)} of {len(results)} rows measured in "
          f"{time.monotonic() - begin:.0f} s; JSON in {args.json}\n")
    print(f"{'row':<32} {'status':<10} {'s':>7}  result")
    print("\n".join(table_line(result) for result in results))


if __name__ == "__main__":
    main()
