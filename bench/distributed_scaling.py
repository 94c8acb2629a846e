"""Clip-parallel scaling on the CPU: gloo worker processes, one thread each, as LongVideoDistributedSampler starts them.

    python bench/distributed_scaling.py [--steps 4] [--frames 32]

1. Throughput: the same total frames as 1 process (one clip of `frames`) and as 2 processes (two clips of frames/2),
   on a small random UNet3D (32/64 channels, 256x256 pixels = 32x32 latents, CFG). Timed inside the workers from a
   common start to the end of sampling (process start and model loading excluded), as wall time and as each rank's
   CPU time (its own work plus its communication threads). On a machine shared with other jobs the wall-time ratio
   falls short of the cores the ranks really get; the CPU-time ratio says what a free core per rank gives.
2. Bytes each rank receives per step (halos + global frames + GroupNorm statistics + the lockstep check) for
   F = 16, 32, 64 frames per clip at 2 ranks: it should not depend on F.
3. Peak RSS per rank as the rank count grows (F fixed): it should stay flat; only the all-gathers grow, by a few frames.
"""

import argparse
import dataclasses
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32, help="total frames of the throughput run")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers: one thread each
    from pack_import import import_pack

    import_pack()
    with tempfile.TemporaryDirectory() as temporary:
        big = save_bench_model(os.path.join(temporary, "bench"))
        small = save_bench_model(os.path.join(temporary, "small"), channels=(8, 16))

        one = run(big, 1, args.frames, 32, args.steps)
        two = run(big, 2, args.frames // 2, 32, args.steps)
        seconds_one, seconds_two = max(r["seconds"] for r in one), max(r["seconds"] for r in two)
        cpu_one, cpu_two = max(r["cpu_seconds"] for r in one), max(r["cpu_seconds"] for r in two)
        print(f"throughput, {args.frames} frames at 256x256, {args.steps} DDIM steps with CFG, gloo, 1 thread per process")
        print("(wall: what the run took on this machine; CPU: the busiest rank's CPU seconds, what it takes with a free core per rank)")
        print(f"{'processes':>10}{'frames/clip':>13}{'wall s':>9}{'frames/s':>10}{'speed-up':>10}{'CPU s':>9}{'speed-up by CPU':>17}")
        for count, seconds, cpu in ((1, seconds_one, cpu_one), (2, seconds_two, cpu_two)):
            print(f"{count:>10}{args.frames // count:>13}{seconds:9.2f}{args.frames / seconds:10.2f}{seconds_one / seconds:10.2f}"
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


if __name__ == "__main__":
    main()
