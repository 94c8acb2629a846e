"""Does a longer video cost more per frame? Continuation + streaming save at 64, 256 and 1024 frames.

    python bench/long_video_scaling.py [--steps 5] [--frames 64 256 1024]

Each length runs in a fresh process on the tiny random model (64x64, 16-frame chunks, 4 frames carried over,
DDIM, CFG 7.5): continuation sampling, then LongVideoSaveVideo from LATENT + VAE into an MP4. Printed per
length: seconds per frame, peak RSS (and peak GPU memory on CUDA), and against the shortest run the time-per-
frame ratio and the extra peak RSS next to the extra latents' size.
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
FRAMES_PER_CHUNK, CARRIED = 16, 4


def run_one(frames: int, steps: int) -> dict:
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import torch

    from pack_import import import_pack

    import_pack()
    from tiny_models import save_tiny_text_to_video

    from longvideo.nodes.conditioning import LongVideoTextEncode
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.loaders import LongVideoModelLoader
    from longvideo.nodes.video import LongVideoSaveVideo

    with tempfile.TemporaryDirectory() as folder:
        os.environ["LONGVIDEO_OUTPUT_DIR"] = os.path.join(folder, "output")
        model, clip, vae = LongVideoModelLoader().load("", "fp32", save_tiny_text_to_video(os.path.join(folder, "tiny")))
        positive = LongVideoTextEncode().encode(clip, "a red circle moving right")[0]
        negative = LongVideoTextEncode().encode(clip, "")[0]
        chunks = 1 + -(-(frames - FRAMES_PER_CHUNK) // (FRAMES_PER_CHUNK - CARRIED))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        latent = LongVideoContinuationSampler().sample(
            model, positive, negative, 64, 64, FRAMES_PER_CHUNK, chunks, CARRIED, CARRIED, "replace", 1, steps, 7.5, "ddim"
        )[0]
        made = latent["samples"].shape[2]
        LongVideoSaveVideo().save("bench/long", 8.0, "mp4", 19, samples=latent, vae=vae, frames_per_batch=16)
        seconds = time.perf_counter() - start
    return {
        "frames": made, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "latent_mb": latent["samples"].numel() * 4 / 2**20,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps)))
        return
    results = []
    for frames in args.frames:
        command = [sys.executable, os.path.abspath(__file__), "--one", str(frames), "--steps", str(args.steps)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(output))
    base = results[0]
    print(f"continuation ({FRAMES_PER_CHUNK}-frame chunks, {CARRIED} carried) + streaming MP4 save, tiny model, 64x64, "
          f"{args.steps} DDIM steps, one process per length")
    print(f"{'frames':>7}{'s/frame':>10}{'peak RSS MB':>13}{'GPU MB':>9}{'time/frame vs first':>21}"
          f"{'extra RSS MB':>14}{'extra latents MB':>18}{'RSS limit MB':>14}")
    for result in results:
        extra_latents = result["latent_mb"] - base["latent_mb"]
        limit = (base["peak_rss_mb"] + extra_latents) * 1.05
        gpu = f"{result['peak_gpu_mb']:9.1f}" if result["peak_gpu_mb"] is not None else f"{'-':>9}"
        print(f"{result['frames']:>7}{result['seconds'] / result['frames']:10.4f}{result['peak_rss_mb']:13.1f}{gpu}"
              f"{(result['seconds'] / result['frames']) / (base['seconds'] / base['frames']):21.3f}"
              f"{result['peak_rss_mb'] - base['peak_rss_mb']:14.1f}{extra_latents:18.2f}{limit:14.1f}")


if __name__ == "__main__":
    main()
