"""Our strategies on a ComfyUI model against ComfyUI's own KSampler doing the same work, measured side by side.

    COMFYUI_PATH=../shared/comfyui python bench/comfy_overhead.py [--repeats 5] [--steps 4] [--frames 5] [--size 8]

Needs a ComfyUI checkout ($COMFYUI_PATH, else ../shared/comfyui beside the checkout). Builds a tiny random Wan 2.1
DiT (as tests/test_comfy_models.py does; ComfyUI reads its sizes from the weights), loads it as UNETLoader does, and
times, alternating after a warm-up so that machine noise hits both sides alike:

- clip:          LongVideo's denoise on the model          vs comfy.sample.sample (KSampler) on the same noise
- continuation:  one chunk with 2 known frames (replace)   vs KSampler with the equivalent noise mask
- hierarchical:  one level of 2 infill segments (batched)  vs KSampler on the same batch with the mask

Every row also checks that both sides give the same latents (max |difference|). Medians and ratios are printed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from pack_import import import_pack  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5, help="latent frames per clip")
    parser.add_argument("--size", type=int, default=8, help="latent height and width")
    parser.add_argument("--sampler", default="euler")
    args = parser.parse_args()

    import comfy_env

    if not comfy_env.import_comfy_or_report():
        return 1
    import comfy.sample
    import comfy.sd

    import_pack()
    from longvideo.models.comfy_model import ComfyDenoiser
    from longvideo.models.denoiser import KnownFrames
    from longvideo.sampling.denoise import TextGuidance, denoise
    from longvideo.sampling.frame_conditioning import ReplaceConditioning

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as folder:
        model = comfy.sd.load_diffusion_model(comfy_env.save_tiny_wan21(os.path.join(folder, "tiny_wan21.safetensors")))
    denoiser = ComfyDenoiser(model)
    generator = torch.Generator().manual_seed(0)
    positive, negative, cfg = torch.randn(1, 8, 4096, generator=generator), torch.randn(1, 4, 4096, generator=generator), 5.0
    guidance = TextGuidance(positive, negative, cfg)
    shape = (1, 16, args.frames, args.size, args.size)
    known = torch.randn(1, 16, 2, args.size, args.size, generator=generator)
    latent_format = model.get_model_object("latent_format")

    def ksampler(batch, mask_frames):
        zeros = torch.zeros((batch,) + shape[1:])
        # Ours draws every item's noise from its own generator (seed 1 each here), as hierarchical segments do.
        noise = torch.cat([comfy.sample.prepare_noise(zeros[:1], 1)] * batch)
        latent, mask = zeros, None
        if mask_frames:
            latent = latent_format.process_out(zeros)
            latent[:, :, mask_frames] = known.expand(batch, -1, -1, -1, -1)
            mask = torch.ones(batch, 1, *shape[2:])
            mask[:, :, mask_frames] = 0
        return comfy.sample.sample(model, noise, args.steps, cfg, args.sampler, "simple", [[positive, {}]],
                                   [[negative, {}]], latent, noise_mask=mask, disable_pbar=True, seed=1)

    def ours(batch, mask_frames):
        conditioning = ReplaceConditioning(KnownFrames(mask_frames, known)) if mask_frames else None
        return denoise(denoiser, guidance, (batch,) + shape[1:], steps=args.steps, seed=1 if batch == 1 else [1] * batch,
                       scheduler=args.sampler, conditioning=conditioning)

    rows = [("clip", 1, []), ("continuation chunk (2 known)", 1, [0, 1]), ("hierarchical level (2 segments)", 2, [0, shape[2] - 1])]
    print(f"tiny Wan 2.1 ({sum(p.numel() for p in model.model.parameters()) / 1e6:.1f} M parameters), latents {shape}, "
          f"{args.steps} {args.sampler} steps, CFG {cfg}, {args.repeats} repeats after a warm-up")
    print(f"{'work':34} {'ours (s)':>9} {'KSampler (s)':>13} {'ratio':>7} {'max |diff|':>11}")
    for name, batch, frames in rows:
        difference = (ours(batch, frames) - ksampler(batch, frames)).abs()
        if frames:
            difference[:, :, frames] = 0  # ComfyUI's output keeps them up to its latent scaling; ours keeps them exact
        timings = {"ours": [], "comfy": []}
        for _ in range(args.repeats):
            for side, run in (("ours", ours), ("comfy", ksampler)):
                start = time.perf_counter()
                run(batch, frames)
                timings[side].append(time.perf_counter() - start)
        a, b = statistics.median(timings["ours"]), statistics.median(timings["comfy"])
        print(f"{name:34} {a:9.3f} {b:13.3f} {a / b:7.3f} {difference.max().item():11.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
