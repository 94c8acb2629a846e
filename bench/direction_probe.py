"""Does the model use the direction word where nothing but the prompt can tell it where the object is?

    python bench/direction_probe.py [--model checkpoints/longvideo-shapes] [--clips 1024] [--held-out 128]

At the noisiest timestep the noisy latents say next to nothing about the clip, so the best clean-latent prediction
is the mean clip of the prompt: frame by frame, the object sits towards the side it starts from for its direction
(it stays on screen, so a clip moving right starts on the left). Two rows are printed, each the mean squared
clean-latent error on held-out drawn clips with the prompt's own direction word and with the reversed one:

- best possible: the per-frame mean latents of --clips drawn clips of the same prompt (a clip played backwards
  counts for the reversed direction) as the prediction;
- model: the model's own prediction at that timestep, for the same noise.

The gap is how much worse the reversed word does. A model that uses the direction word comes near the best gap;
0% means it ignores the word there, and the direction of the motion is then left to the seed (bench/quality.py).
"""

import argparse
import os
import random
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "checkpoints", "longvideo-shapes")


def reversed_prompt(prompt: str) -> str:
    from longvideo.tools.train_tiny_model import REVERSED

    words = prompt.split()
    return " ".join(words[:-1] + [REVERSED[words[-1]]])


def encode_clips(vae, clips, frames: int):
    """Scaled latents [N, C, T, h, w] of drawn clips, through the pack's VideoVAE."""
    import torch

    from longvideo.tools.synthetic_shapes import render

    return torch.cat([vae.encode(torch.from_numpy(render(clip, frames)).float() / 255, frames) for clip in clips])


def probe(folder: str, clips: int = 1024, held_out: int = 128, timestep: int = 999, frames: int = 16, seed: int = 0) -> dict:
    """{"best": (right, reversed), "model": (right, reversed)}: clean-latent mean squared errors."""
    import torch
    from diffusers import DDPMScheduler

    from longvideo.models.loader import load_text_to_video
    from longvideo.sampling.denoise import clean_estimate
    from longvideo.tools.synthetic_shapes import random_clip
    from longvideo.tools.train_tiny_model import TrainConfig

    model = load_text_to_video(folder)
    rng = random.Random(seed)
    speed = TrainConfig().speed  # the clips the model was trained on
    with torch.no_grad():
        seen = [random_clip(rng, frames, speed=speed) for _ in range(clips)]
        test = [random_clip(rng, frames, speed=speed) for _ in range(held_out)]
        seen_latents, test_latents = encode_clips(model.vae, seen, frames), encode_clips(model.vae, test, frames)

        sums, counts = {}, {}
        for clip, latent in zip(seen, seen_latents):
            for prompt, video in ((clip.prompt, latent), (reversed_prompt(clip.prompt), latent.flip(1))):
                sums[prompt] = sums.get(prompt, 0) + video
                counts[prompt] = counts.get(prompt, 0) + 1
        fallback = seen_latents.mean(0)

        def mean_of(prompt):
            return sums[prompt] / counts[prompt] if prompt in sums else fallback

        prompt_sets = ([c.prompt for c in test], [reversed_prompt(c.prompt) for c in test])
        best = [torch.stack([mean_of(p) for p in prompts]) for prompts in prompt_sets]

        schedule = DDPMScheduler.from_config(model.denoiser.scheduler_config)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(test_latents.shape, generator=generator)
        steps = torch.full((held_out,), timestep)
        noisy = schedule.add_noise(test_latents, noise, steps)
        model.denoiser.load()
        predicted = [
            clean_estimate(model.denoiser(noisy, steps, model.text_encoder.encode(prompts)[0]), noisy,
                           schedule.alphas_cumprod[timestep], model.denoiser.prediction_type)
            for prompts in prompt_sets
        ]

    def errors(predictions):
        return tuple(float((p - test_latents).square().mean()) for p in predictions)

    return {"best": errors(best), "model": errors(predicted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a diffusers text-to-video folder trained on synthetic shapes")
    parser.add_argument("--clips", type=int, default=1024, help="drawn clips for the per-prompt mean latents")
    parser.add_argument("--held-out", type=int, default=128, help="drawn clips the errors are measured on")
    parser.add_argument("--timestep", type=int, default=999)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.clips < 1 or args.held_out < 1:
        raise SystemExit("--clips and --held-out must be at least 1")

    sys.path[:0] = [ROOT]
    import torch

    from pack_import import import_pack

    import_pack()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = probe(args.model, args.clips, args.held_out, args.timestep, args.frames, args.seed)
    print(f"model {os.path.relpath(args.model)}; timestep {args.timestep}; {args.held_out} held-out {args.frames}-frame "
          f"clips; means from {args.clips} clips; clean-latent mean squared error")
    print(f"{'':<16}{'right word':>12}{'reversed word':>15}{'gap':>9}")
    for row, (right, wrong) in result.items():
        name = "best possible" if row == "best" else "model"
        print(f"{name:<16}{right:>12.4f}{wrong:>15.4f}{100 * (wrong - right) / right:>+8.1f}%")


if __name__ == "__main__":
    main()
