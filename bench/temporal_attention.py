"""Time and peak memory of one UNet3D temporal attention layer per mode, side by side.

    python bench/temporal_attention.py [--device cuda --dtype fp16] [--pixels 64] [--channels 320]

Modes: full (fused SDPA, the default and what diffusers runs), window (w=5), dual_scope (padding 8,
16 global frames), and eager-full (diffusers' non-fused AttnProcessor, which writes out the T x T score
matrix: what attention costs without a fused kernel) for comparison. Each (mode, T) runs in a fresh
process so its peak memory is its own: on the CPU the peak RSS above the inputs, on CUDA the peak
allocated memory above the inputs. The ratios compare window with full at the same T: for the whole
layer, and ("core") for the attention step alone, without the projections every mode shares.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = (16, 64, 256, 1024)
WINDOW_ONLY_FRAMES = (4096,)
EAGER_MAX_FRAMES = 1024
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def measure_one(mode: str, frames: int, args) -> dict:
    sys.path.insert(0, ROOT)
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from pack_import import import_pack

    import_pack()
    from longvideo.attention.temporal import DualScopeAttention, FullAttention, TemporalAttentionProcessor, WindowAttention

    torch.manual_seed(0)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    layer = Attention(query_dim=args.channels, heads=8, dim_head=args.channels // 8).to(device, dtype).eval()
    scopes = {"full": FullAttention(), "window": WindowAttention(window=5),
              "dual_scope": DualScopeAttention(padding=8, global_frames=16)}
    layer.set_processor(AttnProcessor() if mode == "eager-full" else TemporalAttentionProcessor(scopes[mode], 500.0))
    hidden = torch.randn(args.pixels, frames, args.channels, device=device, dtype=dtype)

    def run():
        with torch.inference_mode():
            output = layer(hidden)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return output

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    result = {"seconds": statistics.median(times), "peak_mb": max(peak, 0) / 2**20}
    if mode in scopes:
        # The attention core alone: what the modes change (the q/k/v/out projections are the same for all).
        q, k, v = (torch.randn(args.pixels, 8, frames, args.channels // 8, device=device, dtype=dtype) for _ in range(3))
        core = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.inference_mode():
                scopes[mode].attend(q, k, v, 500.0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            core.append(time.perf_counter() - start)
        result["core_seconds"] = statistics.median(core)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--pixels", type=int, default=64, help="latent pixels x batch (8x8 latent by default)")
    parser.add_argument("--channels", type=int, default=320, help="channels of the layer (ModelScope's first level)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("MODE", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args)))
        return

    rows = []
    for frames in FRAMES + WINDOW_ONLY_FRAMES:
        modes = ["window"] if frames in WINDOW_ONLY_FRAMES else ["full", "window", "dual_scope"]
        if frames <= EAGER_MAX_FRAMES and frames not in WINDOW_ONLY_FRAMES:
            modes.append("eager-full")
        results = {}
        for mode in modes:
            command = [sys.executable, os.path.abspath(__file__), "--one", mode, str(frames), "--device", args.device,
                       "--dtype", args.dtype, "--pixels", str(args.pixels), "--channels", str(args.channels),
                       "--repeats", str(args.repeats)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[mode] = json.loads(output)
        rows.append((frames, results))
        print_row(frames, results, header=len(rows) == 1, args=args)


def print_row(frames, results, header, args):
    modes = ("full", "window", "dual_scope", "eager-full")
    if header:
        print(f"one temporal attention layer: {args.pixels} pixels x T frames x {args.channels} channels, 8 heads, "
              f"{args.dtype} on {args.device}; median of {args.repeats}; peak = memory above the inputs")
        print(f"{'T':>6} " + " ".join(f"{m + ' s':>14}{m + ' MB':>15}" for m in modes) + f"{'window/full time':>18}{'window/full mem':>17}{'window/full core':>19}")
    cells = []
    for mode in modes:
        if mode in results:
            cells.append(f"{results[mode]['seconds']:14.4f}{results[mode]['peak_mb']:15.1f}")
        else:
            cells.append(f"{'-':>14}{'-':>15}")
    ratios = ""
    if "full" in results:
        full, window = results["full"], results["window"]
        memory = window["peak_mb"] / full["peak_mb"] if full["peak_mb"] > 0 else float("nan")
        core = window["core_seconds"] / full["core_seconds"]
        ratios = f"{window['seconds'] / full['seconds']:18.3f}{memory:17.3f}{core:19.3f}"
    print(f"{frames:>6} " + " ".join(cells) + ratios, flush=True)


if __name__ == "__main__":
    main()
