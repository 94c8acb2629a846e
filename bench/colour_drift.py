"""Does colour matching hold a continuation's colours, and what does it cost the seams? Measured side by side.

    python bench/colour_drift.py [--seeds 4] [--chunks 12] [--drift 0 0 0 0.3] [--threads 1]

Continuation videos of the embedded model (a red circle turning clockwise chunk after chunk, as the shipped
continuation workflow, `learned`, 16-frame chunks carrying 2-4 frames over, CFG 9) are made twice per seed: as the
model makes them, and with injected drift: the new latents of chunk c come out with c x DRIFT added to each latent
channel before the next chunk continues from them, so the offset builds up chunk after chunk as a drifting model's
latent statistics do. The embedded model hardly drifts by itself (its world is a few fixed colours on grey), and its
VAE cannot show a colour it was not trained on: a CIELAB shift of (3, 0, 4) encoded and decoded again comes back as
(0.0, 0.3, 0.5), so the drift is injected where this model can carry it, in its latents (channel 3 moves the colours
most: + 0.5 there is Delta E 0.7). Each video is corrected every way below, and LongVideoReport's figures
(utils/video_report.py) are printed per way:

- off: as sampled;
- latent anchor: the continuation sampler's `anchor_colours` (each chunk's latent mean and spread per channel
  matched to the first chunk's, in latent space, before decoding; sampled again with it on);
- pixel <method> <reference>: LongVideoColourMatch on the decoded frames (utils/colour_match.py).

Columns: colour drift (Delta E 2000 between the mean colour of the first and the last 15% of the frames), the largest
Delta E of a frame's mean colour to the first chunk's, the mean colour step at the joins and inside the chunks
(Delta E between consecutive frames' mean colours), the seam ratio (motion at the joins over the interior motion), and
the share of frames in which bench/quality.py finds the object in the prompt's colour.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECTIONS = ["right", "down", "left", "up"]
PIXEL_WAYS = [("mkl", "first_chunk"), ("lab", "first_chunk"), ("histogram", "first_chunk"), ("mkl", "carried_frames")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--drift", type=float, nargs=4, default=[0.0, 0.0, 0.0, 0.3], metavar="C",
                        help="the offset each chunk adds to each latent channel of the injected-drift videos")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    sys.path[:0] = [ROOT]
    import torch

    from pack_import import import_pack

    import_pack()
    from longvideo.bench import quality
    from longvideo.models.loader import load_text_to_video
    from longvideo.nodes.joins import continuation_joins
    from longvideo.sampling import continuation
    from longvideo.utils.colour_match import MatchSettings, match_colours
    from longvideo.utils.video_report import measure_frames, summarise

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_text_to_video(quality.DEFAULT_MODEL)
    options = quality.Options(method="learned", cfg=9.0)
    prompts = [quality.guidance(model, f"a red circle moving {d}", options) for d in DIRECTIONS]

    def sample(seed: int, anchor: bool, drift) -> tuple[np.ndarray, list[int]]:
        settings = continuation.ContinuationSettings(16, args.chunks, 2, 4, "learned", anchor_colours=anchor)
        real = continuation.denoise
        made = []

        def drifting(*a, **kw):
            latents = real(*a, **kw)
            chunk = len(made)
            made.append(chunk)
            k = counts[chunk]
            if chunk and any(drift):
                latents = latents.clone()
                latents[:, :, k:] += torch.tensor(drift, dtype=latents.dtype).view(1, -1, 1, 1, 1) * chunk
            return latents

        counts = continuation.known_frame_counts(settings, seed, 0)
        continuation.denoise = drifting
        try:
            latents = continuation.continue_video(model.denoiser, prompts, settings, size=(1, 8, 8), steps=20, seed=seed,
                                                  scheduler="dpmpp_2m")
        finally:
            continuation.denoise = real
        joins, _ = continuation_joins(counts, 16, 0)
        return quality.decode(model, latents).astype(np.float32) / 255, joins

    def figures(video, joins) -> dict:
        report = summarise(measure_frames([video]), joins)
        measured = quality.measure(quality.Generated((video * 255).round().astype(np.uint8),
                                                     [quality.Stretch(0, len(video), "right")], joins), "red")
        return {"drift": report["drift"]["colour_delta_e"], "max": report["summary"]["max_delta_e_to_first"],
                "joins": report["summary"]["colour_step_at_joins"], "interior": report["summary"]["colour_step_interior"],
                "seam": report["summary"]["seam_ratio"], "identity": 100 * measured.identity}

    rows: dict[tuple[str, str], list[dict]] = {}
    began = time.perf_counter()
    for drift_name, drift in (("none", (0.0,) * 4), ("injected", tuple(args.drift))):
        for seed in range(args.seeds):
            video, joins = sample(seed, False, drift)
            rows.setdefault((drift_name, "off"), []).append(figures(video, joins))
            for method, reference in PIXEL_WAYS:
                fixed = video.copy()
                match_colours(fixed, joins, MatchSettings(method, reference))
                rows.setdefault((drift_name, f"pixel {method} {reference}"), []).append(figures(fixed, joins))
            anchored, joins = sample(seed, True, drift)
            rows.setdefault((drift_name, "latent anchor"), []).append(figures(anchored, joins))
            print(f"  drift {drift_name}, seed {seed} done ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)

    print(f"{args.seeds} seeds x {args.chunks} chunks of 16 frames; injected drift per chunk and latent channel: "
          f"{', '.join(f'{d:g}' for d in args.drift)}")
    print(f"{'drift':<10}{'way':<32}{'colour drift':>13}{'max dE':>8}{'dE at joins':>13}{'dE inside':>11}"
          f"{'seam':>7}{'identity %':>12}")
    for (drift_name, way), measured in rows.items():
        mean = {key: float(np.mean([m[key] for m in measured])) for key in measured[0]}
        print(f"{drift_name:<10}{way:<32}{mean['drift']:>13.2f}{mean['max']:>8.2f}{mean['joins']:>13.2f}"
              f"{mean['interior']:>11.2f}{mean['seam']:>7.2f}{mean['identity']:>12.1f}")


if __name__ == "__main__":
    main()
