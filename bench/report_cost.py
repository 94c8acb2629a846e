"""What LongVideoReport and LongVideoColourMatch cost per frame, against decoding the same frames, side by side.

    python bench/report_cost.py [--frames 256] [--repeats 3] [--threads 1] [--no-sd-vae]

For each frame size (64x64, the embedded model's; 512x320, a UNet3D model's) the same latents are decoded by a VAE
and the decoded frames are measured by the report (utils/video_report.py: every figure, the summary and the plot) and
corrected by the colour match (utils/colour_match.py, MKL to the first chunk, both passes), alternating, `--repeats`
times; the medians per frame are printed with their ratio to the decode. `--frames` frames at 64x64, an eighth of
them at 512x320 (the SD-size VAE: a sixteenth and a 128th, at least 2): the plot and the summary cost the same
for any length, and are counted in. VAEs: the embedded model's
(checkpoints/longvideo-shapes, 13.5 MB), and a VAE of Stable Diffusion's size (diffusers AutoencoderKL with SD 1.5's
configuration, random weights: the VAE ModelScope text-to-video and Zeroscope decode with; the same work as trained
weights). The goal: the report at most 0.2x the decode. Torch and OpenCV get the same threads.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ((64, 64), (512, 320))
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=256, help="frames per run at 64x64 (fewer at 512x320, see above)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sd-vae", action="store_true", help="only the embedded model's VAE")
    args = parser.parse_args()

    sys.path[:0] = [ROOT]
    import cv2
    import torch

    from pack_import import import_pack

    import_pack()
    from longvideo.models.loader import load_text_to_video
    from longvideo.models.vae import VideoVAE
    from longvideo.utils.colour_match import MatchSettings, match_colours
    from longvideo.utils.video_report import draw_report, measure_frames, summarise

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    vaes = [("embedded", load_text_to_video(os.path.join(ROOT, "checkpoints", "longvideo-shapes")).vae, args.frames)]
    if not args.no_sd_vae:
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        vaes.append(("SD-size", VideoVAE(AutoencoderKL(**SD_VAE).eval()), args.frames // 16))

    print(f"{args.threads} threads; medians of {args.repeats} runs; the report: every figure, summary and plot; colour "
          "match: MKL to the first chunk, two passes")
    print(f"{'VAE':<10}{'size':>9}{'frames':>8}{'decode ms/f':>13}{'report ms/f':>13}{'report / decode':>17}"
          f"{'match ms/f':>12}{'match / decode':>16}")
    for name, vae, base in vaes:
        for (width, height), share in zip(SIZES, (1, 8)):
            frames = max(2, base // share)
            generator = torch.Generator().manual_seed(0)
            latents = torch.randn(1, vae.latent_channels, frames, height // vae.downscale, width // vae.downscale,
                                  generator=generator)
            joins = list(range(max(1, frames // 4), frames, max(1, frames // 4)))
            times = {"decode": [], "report": [], "match": []}
            for _ in range(args.repeats):
                began = time.perf_counter()
                video = np.concatenate([b.numpy() for b in vae.decode_batches(latents, 16)])
                times["decode"].append(time.perf_counter() - began)
                began = time.perf_counter()
                draw_report(summarise(measure_frames([video[i : i + 16] for i in range(0, frames, 16)]), joins))
                times["report"].append(time.perf_counter() - began)
                began = time.perf_counter()
                match_colours(video, joins, MatchSettings("mkl", "first_chunk"))
                times["match"].append(time.perf_counter() - began)
            per_frame = {key: 1000 * statistics.median(value) / frames for key, value in times.items()}
            print(f"{name:<10}{f'{width}x{height}':>9}{frames:>8}{per_frame['decode']:>13.2f}{per_frame['report']:>13.2f}"
                  f"{per_frame['report'] / per_frame['decode']:>17.3f}{per_frame['match']:>12.2f}"
                  f"{per_frame['match'] / per_frame['decode']:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
