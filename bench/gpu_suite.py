"""Every GPU figure the pack needs, in one command that fits a short GPU loan: one table, also written as JSON.

    python bench/gpu_suite.py --json gpu_suite.json   # one CUDA GPU; sized to end within 8 minutes on an H200
    python bench/gpu_suite.py --dry-run               # the same code paths on tiny configurations on the CPU (CI)
    python bench/gpu_suite.py --list                  # the rows; --rows NAME ... runs some of them

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

Each row runs in a worker process under its own time budget: a row that fails is reported with its error and the
worker goes on; a row that runs past its budget is killed with its worker and the next row starts in a fresh one.
The whole suite stops at its total budget (rows not reached are reported as skipped). Rows are printed as they
finish and the JSON is rewritten after each, so whatever ends the run, the finished rows are kept.
"""

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "@@gpu_suite "  # prefix of the worker's protocol lines on its stdout
H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM, dense (no sparsity)
ANCHORS = "Video-Infinity 0.96 frames/s per RTX 6000 Ada; FLOP floor of this work 16.8 frames/s on an H200"
FULL_TOTAL_S, DRY_TOTAL_S = 470.0, 60.0
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

    def components(self, config: str, dtype: str):
        """sampler_overhead.build's (unet, text model, tokenizer, vae, scheduler), built on the device directly."""
        from longvideo.bench import sampler_overhead

        if self._key != (config, dtype):
            self._components = None
            self.release()
            with self.torch.device(self.device):
                self._components = sampler_overhead.build(config, sampler_overhead.DTYPES[dtype], self.device)
            self._key = (config, dtype)
        return self._components

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


# ---------------------------------------------------------------------------------------------------
# the rows of the full suite and of the dry run


@dataclasses.dataclass
class Row:
    name: str
    function: Callable
    full: dict | None  # parameters on the GPU; None: not in the full suite
    dry: dict | None  # parameters of the dry run; None: not in the dry run
    budget_s: float  # on the GPU; a dry-run row gets DRY_ROW_S


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
    return rows


ROWS = {row.name: row for row in _rows()}


def selected_rows(dry: bool, names: list[str] | None) -> list[Row]:
    available = [row for row in ROWS.values() if (row.dry if dry else row.full) is not None]
    if not names:
        return available
    unknown = [name for name in names if name not in {row.name for row in available}]
    if unknown:
        raise SystemExit(f"unknown rows {unknown} for the {'dry run' if dry else 'GPU suite'}: "
                         f"choose from {', '.join(row.name for row in available)}")
    return [row for row in available if row.name in names]


# ---------------------------------------------------------------------------------------------------
# the worker: runs rows one after another, one protocol line before and after each


def emit(event: dict) -> None:
    print(MARK + json.dumps(event), flush=True)


def worker(names: list[str], dry: bool, inject: dict[str, str]) -> None:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from pack_import import import_pack

    import_pack()
    import torch
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel  # noqa: F401  (imported here, not in a row's time)
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
            result = row.function(bench, **(row.dry if dry else row.full))
            emit({"event": "done", "row": name, "status": "ok", "seconds": time.perf_counter() - start,
                  "summary": result.pop("summary"), "result": result})
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
        return row_budget_s or (DRY_ROW_S if dry else ROWS[name].budget_s)

    def finish(name: str, outcome: dict) -> None:
        results[name] = {"row": name, "budget_s": budget(name), **outcome}
        pending.remove(name)
        report(results[name])

    while pending:
        worker = Worker(pending, dry, inject)
        first = True
        while pending:
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
                elif first:  # a worker that cannot start a row fails every row
                    reason = "worker did not start in time" if event == "timeout" else worker.exit_reason()
                    for rest in list(pending):
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
    parser.add_argument("--inject", action="append", default=[], help=argparse.SUPPRESS)  # KIND:ROW, KIND fail or hang
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.dry_run, dict(reversed(item.split(":", 1)) for item in args.inject))
        return

    rows = selected_rows(args.dry_run, args.rows)
    if args.list:
        for row in rows:
            print(f"{row.name:<32} budget {DRY_ROW_S if args.dry_run else row.budget_s:5.0f} s")
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

    results = run_suite(rows, args.dry_run, begin + total, args.row_budget, args.inject, report, on_machine)
    document["rows"] = results
    write()
    print(f"\n{sum(r['status'] == 'ok' for r in results)} of {len(results)} rows measured in "
          f"{time.monotonic() - begin:.0f} s; JSON in {args.json}\n")
    print(f"{'row':<32} {'status':<10} {'s':>7}  result")
    print("\n".join(table_line(result) for result in results))


if __name__ == "__main__":
    main()
