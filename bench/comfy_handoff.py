"""What a Wan image-to-video model receives in its image slots when continuation hands over the carried-over frames in
pixels (what the pack does) or in latents: the measurement behind the hand-off choice in docs/comfyui_models.md.

    COMFYUI_PATH=../shared/comfyui python bench/comfy_handoff.py [--size 32] [--known 2] [--seed 0]

With ComfyUI's own Wan 2.1 VAE class (its full configuration, seeded random weights: no trained weights can be had
here) and a video of a moving shape (tools/synthetic_shapes.py), it prints, slot by slot:

1. kind of latent: one image encoded as a clip's first latent frame (what WanImageToVideo hands a model for its start
   image) against the same image held still over a video, encoded as a later latent frame (what a carried-over latent
   frame is). The content is identical; only the kind of latent differs.
2. a chunk that knows the video's last k latent frames: the concat_latent_image WanImageToVideo makes from the video's
   true last 4 (k - 1) + 1 pixel frames (the reference: what a user gets handing those frames to the node), against
   the pack's pixel hand-off (the carried-over latents decoded after two frames of context, re-encoded by the node) and
   a latent hand-off (the carried-over latents themselves in the known slots, the node's latents elsewhere).

Differences are relative: |a - b| / |b| over the slot. Random weights do not make the decoder invert the encoder, so
the pixel hand-off's round-trip error here is a random VAE's, far above a trained one's; the latent hand-off's
difference in slot 0 is structural (a latent of another kind in the model's image slot) and does not depend on weights.
"""

import argparse
import importlib.util
import os
import random
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def shapes_video(frames: int, size: int, seed: int) -> torch.Tensor:
    spec = importlib.util.spec_from_file_location("synthetic_shapes", os.path.join(ROOT, "tools", "synthetic_shapes.py"))
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    clip = shapes.random_clip(random.Random(seed), frames=frames, size=size)
    return torch.from_numpy(shapes.render(clip, frames)).float() / 255


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="frame width and height in pixels (a multiple of 16)")
    parser.add_argument("--known", type=int, default=2, help="latent frames carried over (k)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import comfy_env

    if not comfy_env.import_comfy_or_report():
        return 1
    import comfy.sd
    from comfy_extras.nodes_wan import WanImageToVideo

    torch.set_grad_enabled(False)
    vae = comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state(args.seed))
    k, chunk = args.known, 5  # latent frames of the chunk
    length = 4 * (chunk - 1) + 1
    video = shapes_video(4 * (k + 2) + 1, args.size, args.seed)  # k + 3 latent frames
    latents = vae.encode(video)
    print(f"ComfyUI's Wan 2.1 VAE class, seeded random weights; {len(video)} frames of {args.size}x{args.size}, "
          f"{latents.shape[2]} latent frames; a chunk of {chunk} latent frames knows the last {k}")

    still = video[-1:].expand(5, -1, -1, -1)
    first, later = vae.encode(video[-1:])[:, :, 0], vae.encode(still)[:, :, 1]
    print(f"\n1. the same image as a first latent frame and as a later one: relative difference {relative(later, first):.3f}")

    def concat(pixels):
        positive, _, _ = WanImageToVideo.execute([[torch.zeros(1, 1, 8), {}]], [[torch.zeros(1, 1, 8), {}]], vae,
                                                 args.size, args.size, length, 1, start_image=pixels).args
        return positive[0][1]["concat_latent_image"]

    reference = concat(video[-(4 * (k - 1) + 1):])
    context = latents[:, :, -k - 2:]
    decoded = vae.decode(context).reshape(-1, args.size, args.size, 3)
    by_pixels = concat(decoded[-(4 * (k - 1) + 1):])
    by_latents = reference.clone()
    by_latents[:, :, :k] = latents[:, :, -k:]
    print("\n2. concat_latent_image per slot against WanImageToVideo on the true frames (relative difference)")
    print(f"{'slot':>5} {'holds':>28} {'pixel hand-off':>15} {'latent hand-off':>16}")
    for slot in range(chunk):
        holds = ("known: 1 pixel frame (image slot)" if slot == 0 else "known: 4 pixel frames" if slot < k
                 else "grey (to generate)")
        print(f"{slot:5d} {holds:>28} {relative(by_pixels[:, :, slot], reference[:, :, slot]):15.3f} "
              f"{relative(by_latents[:, :, slot], reference[:, :, slot]):16.3f}")
    round_trip = (decoded[-(4 * (k - 1) + 1):] - video[-(4 * (k - 1) + 1):]).abs().mean()
    print(f"\npixel round trip of the carried-over frames (mean |difference| in 0..1): {float(round_trip):.3f} "
          "(a random VAE's; a trained VAE reconstructs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
