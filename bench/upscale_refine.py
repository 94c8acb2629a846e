"""Does the refine pass after a 2x latent upscale stay within memory on long videos? Whole clip vs context windows.

    python bench/upscale_refine.py [--frames 64 256 1024] [--steps 4] [--modes whole windows]

Each (frames, mode) runs in a fresh process on the tiny random model: a random 64x64 latent video is upscaled 2x
(bilinear) and refined with LongVideoSampler at denoise 0.5 (DDIM, CFG 7.5), either on the whole clip at once or
through LongVideoContextWindows (16 frames, overlap 4). Printed: seconds per frame, peak RSS (and peak GPU memory
on CUDA), the most frames the UNet was handed at once, and peak memory against the shortest run of the same mode.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW, OVERLAP = 16, 4


def run_one(frames: int, mode: str, steps: int) -> dict:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import torch

    from pack_import import import_pack

    import_pack()
    from tiny_models import save_tiny_text_to_video

    from longvideo.nodes.conditioning import LongVideoTextEncode
    from longvideo.nodes.context_windows import LongVideoContextWindows
    from longvideo.nodes.loaders import LongVideoModelLoader
    from longvideo.nodes.sampler import LongVideoSampler
    from longvideo.nodes.upscale import LongVideoLatentUpscale

    with tempfile.TemporaryDirectory() as folder:
        model, clip, _ = LongVideoModelLoader().load("", "fp32", save_tiny_text_to_video(os.path.join(folder, "tiny")))
    positive = LongVideoTextEncode().encode(clip, "a red circle moving right")[0]
    negative = LongVideoTextEncode().encode(clip, "")[0]
    largest = []
    model.unet.register_forward_pre_hook(lambda _, args: largest.append(args[0].shape[2]))
    if mode == "windows":
        model = LongVideoContextWindows().patch(model, WINDOW, OVERLAP)[0]
    small = {"samples": torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(0))}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    upscaled = LongVideoLatentUpscale().upscale(small, "bilinear", 2.0, 0, 0, 16)[0]
    refined = LongVideoSampler().sample(model, positive, negative, upscaled, 1, steps, 7.5, "ddim", 0.5)[0]["samples"]
    seconds = time.perf_counter() - start
    return {
        "frames": refined.shape[2], "mode": mode, "seconds": seconds, "largest_input_frames": max(largest),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--modes", nargs="+", default=["whole", "windows"], choices=["whole", "windows"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1], args.steps)))
        return
    print(f"2x bilinear latent upscale + refine (denoise 0.5, {args.steps} DDIM steps), tiny model, 128x128 after upscaling, "
          f"windows of {WINDOW} frames overlapping by {OVERLAP}, one process per run")
    print(f"{'mode':>8}{'frames':>7}{'s/frame':>10}{'largest input':>15}{'peak RSS MB':>13}{'GPU MB':>9}{'peak vs first':>15}")
    for mode in args.modes:
        first = None
        for frames in args.frames:
            command = [sys.executable, os.path.abspath(__file__), "--one", str(frames), mode, "--steps", str(args.steps)]
            result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            peak = result["peak_gpu_mb"] if result["peak_gpu_mb"] is not None else result["peak_rss_mb"]
            first = first or peak
            gpu = f"{result['peak_gpu_mb']:9.1f}" if result["peak_gpu_mb"] is not None else f"{'-':>9}"
            print(f"{mode:>8}{result['frames']:>7}{result['seconds'] / result['frames']:10.4f}{result['largest_input_frames']:>15}"
                  f"{result['peak_rss_mb']:13.1f}{gpu}{peak / first:15.2f}")


if __name__ == "__main__":
    main()
