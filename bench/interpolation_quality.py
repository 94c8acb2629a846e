"""How well does each interpolation method put back dropped frames? PSNR, SSIM and centroid error against ground truth.

    python bench/interpolation_quality.py [--clips 20] [--frames 33] [--factor 4] [--model PATH --steps 20]

Ground truth: synthetic videos of one shape moving in a straight line (tools/synthetic_shapes.py, 64x64, seeded).
Every factor-th frame is kept, the frames between are interpolated back, and only those in-between frames are scored
(the kept frames are exact in every method): PSNR from their mean squared error, SSIM (Gaussian window 11, sigma 1.5,
per channel), the distance in pixels between the shape's measured and true centre, and seconds per output frame.

Methods: linear blending, optical flow (Farneback, DIS). With --model (a diffusers text-to-video folder, e.g. the
embedded shapes model) also the diffusion latent interpolation: the kept frames are VAE-encoded, interpolated by
LongVideoLatentInterpolate's strategy ('replace', or 'learned' for a hint-channel model; --latent-methods to choose)
with the clip's prompt, and decoded; a "vae round trip" row (every true frame encoded and decoded) shows the ceiling
the VAE sets for any latent method.
"""

import argparse
import os
import random
import sys
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    mse = float(((estimate.astype(np.float64) - truth) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of two images [H, W, C] in 0..1: Gaussian window 11, sigma 1.5, per channel."""
    c1, c2 = 0.01**2, 0.03**2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    x, y = estimate.astype(np.float64), truth.astype(np.float64)
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    covariance = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(score.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20, help="synthetic videos (seeds 0 .. clips-1)")
    parser.add_argument("--frames", type=int, default=33, help="true frames per video; (frames - 1) %% factor == 0")
    parser.add_argument("--factor", type=int, default=4, help="keep every factor-th frame")
    parser.add_argument("--model", help="a diffusers text-to-video folder: adds the diffusion latent rows")
    parser.add_argument("--latent-methods", nargs="+", help="frame conditioning methods for the latent rows (default: "
                        "replace, or learned for a hint-channel model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--scheduler", default="ddim")
    args = parser.parse_args()
    if (args.frames - 1) % args.factor:
        parser.error(f"--frames {args.frames} must be 1 + a multiple of --factor {args.factor}")

    sys.path.insert(0, ROOT)
    from pack_import import import_pack

    import_pack()
    import torch

    from longvideo.sampling.flow_interpolation import interpolate_frames
    from longvideo.tools.synthetic_shapes import find_shape, random_clip, render

    clips = [random_clip(random.Random(seed), args.frames) for seed in range(args.clips)]
    videos = [render(clip, args.frames).astype(np.float32) / 255 for clip in clips]
    between = [j for j in range(args.frames) if j % args.factor]

    rows = {}

    def score(name, outputs, seconds, frames_made):
        """outputs: per clip the full interpolated video [frames, H, W, 3]; scored on the in-between frames only."""
        psnrs, ssims, errors = [], [], []
        for clip, video, out in zip(clips, videos, outputs):
            psnrs.append(psnr(out[between], video[between]))
            ssims.append(np.mean([ssim(out[j], video[j]) for j in between]))
            for j in between:
                found = find_shape(out[j])
                true_x, true_y = clip.centre(j)
                errors.append(np.hypot(found.centre[0] - true_x, found.centre[1] - true_y) if found.centre else np.nan)
        missing = int(np.isnan(errors).sum())
        rows[name] = (np.mean(psnrs), np.mean(ssims), np.nanmean(errors), missing, seconds / frames_made)

    for method in ("linear", "farneback", "dis"):
        start = time.perf_counter()
        outputs = [interpolate_frames(torch.from_numpy(video[:: args.factor].copy()), args.factor, method).numpy() for video in videos]
        score(method, outputs, time.perf_counter() - start, len(between) * len(videos))

    if args.model:
        latent_rows(args, clips, videos, between, score)

    print(f"{args.clips} synthetic shape videos, 64x64, {args.frames} frames, every {args.factor}th kept, "
          f"{len(between)} in-between frames per video scored")
    print(f"{'method':<28}{'PSNR dB':>9}{'SSIM':>8}{'centre err px':>15}{'lost':>6}{'ms/frame':>10}")
    for name, (p, s, error, missing, seconds) in rows.items():
        print(f"{name:<28}{p:9.2f}{s:8.4f}{error:15.2f}{missing:6d}{seconds * 1000:10.2f}")
    best_flow = max(rows["farneback"][0], rows["dis"][0])
    print(f"best flow - linear: {best_flow - rows['linear'][0]:+.2f} dB PSNR (goal: >= +3 dB)")


def latent_rows(args, clips, videos, between, score):
    import torch

    from longvideo.models.loader import load_text_to_video
    from longvideo.sampling.denoise import TextGuidance
    from longvideo.sampling.interpolation import InterpolationSettings, interpolate_latents

    model = load_text_to_video(args.model)
    denoiser, vae = model.denoiser, model.vae
    negative = model.text_encoder.encode([""])[0]

    def decode(latents):
        return torch.cat(list(vae.decode_batches(latents, 16))).numpy()

    start = time.perf_counter()
    outputs = [decode(vae.encode(torch.from_numpy(video), 16)) for video in videos]
    score("vae round trip (ceiling)", outputs, time.perf_counter() - start, args.frames * len(videos))

    methods = args.latent_methods or (["learned"] if denoiser.takes_known_frames else ["replace"])
    for method in methods:
        settings = InterpolationSettings(factor=args.factor, method=method)
        outputs, start = [], time.perf_counter()
        for seed, (clip, video) in enumerate(zip(clips, videos)):
            guidance = TextGuidance(model.text_encoder.encode([clip.prompt])[0], negative, args.cfg)
            keyframes = vae.encode(torch.from_numpy(video[:: args.factor].copy()), 16)
            latents = interpolate_latents(denoiser, guidance, keyframes, settings, steps=args.steps, seed=seed,
                                          scheduler=args.scheduler)
            frames = decode(latents)
            outputs.append(frames)
        score(f"diffusion {method} ({args.steps} steps)", outputs, time.perf_counter() - start, len(between) * len(videos))


if __name__ == "__main__":
    main()
