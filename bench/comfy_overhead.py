"""Our strategies on a ComfyUI model against ComfyUI's own nodes doing the same work, measured side by side.

    COMFYUI_PATH=../shared/comfyui python bench/comfy_overhead.py [--repeats 5] [--steps 4] [--frames 5] [--size 8]
                                                                  [--real-vae] [--threads 1] [--rows WORD ...]

Needs a ComfyUI checkout ($COMFYUI_PATH, else ../shared/comfyui beside the checkout). Builds tiny random Wan 2.1 DiTs
(as tests/test_comfy_models.py does; ComfyUI reads their sizes from the weights), loads them as UNETLoader does, and
runs everything inside torch.inference_mode, as ComfyUI's executor runs nodes. Each row times both sides alternating
after a warm-up, so that machine noise hits both alike, and prints the medians, their ratio ours / ComfyUI (goal:
<= 1.05), the ratio of the medians of this process's CPU time (steadier where other processes share a small machine:
its wall-clock ratios move by several percent between runs) and the largest |difference| of the two sides' latents
(they must agree to 1e-4, as the tests find; both sides run the same sampling, so they come out identical; the rows
with a noise mask leave the kept frames out, which ComfyUI returns through its latent scaling and ours exactly):

- clip:           LongVideo's denoise on the model            vs comfy.sample.sample (KSampler) on the same noise
- continuation:   one chunk with 2 known frames (replace)     vs comfy.sample.sample with the equivalent noise mask
- hierarchical:   one level of 2 infill segments (batched)    vs comfy.sample.sample on the same batch with the mask
- A14B clip:      ComfyDenoiser(high, low_noise=low, switch_step=steps // 2), Wan 2.2 A14B's two experts (two tiny
                  Wans, each patched with ModelSamplingSD3 shift 8 as the template does)
                                                              vs the Wan 2.2 template's chain: KSamplerAdvanced on the
                                                                 high-noise expert for the first steps returning its
                                                                 leftover noise, then KSamplerAdvanced on the low-noise one
- learned infill: one infill segment whose first and last latent frames are known, frame conditioning 'learned' on a
                  Wan with image input channels (the tiny Wan with 20 extra input channels: Wan 2.2 A14B I2V's and Fun
                  InP's layout), i.e. denoise(..., conditioning=LearnedConditioning(KnownFrames([0, T - 1], ends)))
                                                              vs VAEDecode of each end, WanFirstLastFrameToVideo and
                                                                 KSampler (the nodes' own functions)

The learned row's VAE decode (2 frames) and encode (the whole clip, inside WanFirstLastFrameToVideo) are part of both
sides. By default the VAE is a cheap stand-in with ComfyUI's VAE interface (tests/comfy_env.StandInVideoVAE), so the
row shows the pack's own overhead; --real-vae uses ComfyUI's Wan 2.1 VAE class at its fixed full size with seeded random
weights (a few seconds to build on a small CPU), whose decode and encode then dominate both sides, as with a real model;
its row then runs at --vae-frames latent frames of --vae-size x --vae-size latents (default 3 of 2 x 2: 9 pixel frames
of 16 x 16, about 0.6 s a run on one CPU thread; 5 of 4 x 4 take about 2 s).

Tiny models run on one CPU thread by default (--threads): more threads only wait on each other.
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

GOAL = 1.05


def outputs(result) -> tuple:
    """A node's outputs as a tuple (V1 nodes and V3 io.ComfyNode alike)."""
    return tuple(result.args if hasattr(result, "args") else result)


def side_by_side(ours, theirs, repeats: int, compare=None):
    """Both sides once (the warm-up, and the latents compared), then `repeats` timed runs of each, alternating.
    Returns the median seconds of ours and of ComfyUI (wall clock), the ratio of their medians of this process's CPU
    time (which other processes on a busy machine disturb less), and the max |difference|."""
    a, b = ours(), theirs()
    difference = (a - b).abs() if compare is None else compare(a, b)
    wall, cpu = {"ours": [], "comfy": []}, {"ours": [], "comfy": []}
    for _ in range(repeats):
        for side, run in (("ours", ours), ("comfy", theirs)):
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - start_cpu)
    cpu_ratio = statistics.median(cpu["ours"]) / statistics.median(cpu["comfy"])
    return statistics.median(wall["ours"]), statistics.median(wall["comfy"]), cpu_ratio, difference.max().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5, help="latent frames per clip")
    parser.add_argument("--size", type=int, default=8, help="latent height and width")
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (tiny models: more only wait on each other)")
    parser.add_argument("--real-vae", action="store_true",
                        help="ComfyUI's Wan 2.1 VAE class (full size, random weights) for the learned row, not the stand-in")
    parser.add_argument("--vae-frames", type=int, default=3, help="latent frames of the learned row with --real-vae")
    parser.add_argument("--vae-size", type=int, default=2, help="latent height and width of the learned row with --real-vae")
    parser.add_argument("--rows", nargs="+", metavar="WORD", help="run only the rows whose name contains one of these")
    args = parser.parse_args()

    import comfy_env

    if not comfy_env.import_comfy_or_report():
        return 1
    import comfy.sample
    import comfy.sd
    import comfy.utils
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    from comfy_extras.nodes_wan import WanFirstLastFrameToVideo

    comfy_nodes = comfy_env.comfy_nodes()
    import_pack()
    from longvideo.models.comfy_model import ComfyDenoiser
    from longvideo.models.denoiser import KnownFrames
    from longvideo.sampling.denoise import TextGuidance, denoise
    from longvideo.sampling.frame_conditioning import LearnedConditioning, ReplaceConditioning

    comfy.utils.set_progress_bar_enabled(False)  # no tqdm on ComfyUI's side (ours runs without a bar here)
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    inference = torch.inference_mode()
    inference.__enter__()  # as ComfyUI's executor runs every node, UNETLoader and VAELoader too

    with tempfile.TemporaryDirectory() as folder:
        def load(name, **options):
            return comfy.sd.load_diffusion_model(comfy_env.save_tiny_wan21(os.path.join(folder, f"{name}.safetensors"), **options))

        model = load("tiny_wan21")
        # Wan 2.2 A14B: two experts, each patched as the template does (ModelSamplingSD3, shift 8).
        high, low = (ModelSamplingSD3().patch(load(f"expert_{seed}", seed=seed), 8.0)[0] for seed in (1, 2))
        image_model = load("tiny_wan21_image", extra_in=20)  # 4 mask + 16 image channels: WanFirstLastFrameToVideo's input
    if args.real_vae:
        start = time.perf_counter()
        vae = comfy.sd.VAE(sd=comfy_env.random_wan21_vae_state())
        vae_name = f"ComfyUI's Wan 2.1 VAE (random weights, built in {time.perf_counter() - start:.1f} s)"
    else:
        vae = comfy_env.StandInVideoVAE(16, 8, 4)
        vae_name = "a stand-in VAE (tests/comfy_env.StandInVideoVAE)"

    denoiser = ComfyDenoiser(model)
    generator = torch.Generator().manual_seed(0)
    positive, negative, cfg = torch.randn(1, 8, 4096, generator=generator), torch.randn(1, 4, 4096, generator=generator), 5.0
    guidance = TextGuidance(positive, negative, cfg)
    text = [[positive, {}]], [[negative, {}]]
    shape = (1, 16, args.frames, args.size, args.size)
    known = torch.randn(1, 16, 2, args.size, args.size, generator=generator)
    latent_format = model.get_model_object("latent_format")

    # -- clip, continuation chunk, hierarchical level: comfy.sample.sample (KSampler's function) with a noise mask

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

    def masked(frames):
        def compare(a, b):
            difference = (a - b).abs()
            difference[:, :, frames] = 0  # ComfyUI's output keeps them up to its latent scaling; ours keeps them exact
            return difference
        return compare

    # -- Wan 2.2 A14B: the template's two KSamplerAdvanced on the same noise (seed 1)

    split = args.steps // 2
    experts = ComfyDenoiser(high, low_noise=low, switch_step=split)

    def ours_experts():
        return denoise(experts, guidance, shape, steps=args.steps, seed=1, scheduler=args.sampler)

    def template_chain():
        advanced = comfy_nodes.KSamplerAdvanced()
        (mid,) = advanced.sample(high, "enable", 1, args.steps, cfg, args.sampler, "simple", *text,
                                 {"samples": torch.zeros(shape)}, 0, split, "enable")
        (out,) = advanced.sample(low, "disable", 1, args.steps, cfg, args.sampler, "simple", *text, mid, split, 10000,
                                 "disable")
        return out["samples"]

    # -- learned infill segment: VAEDecode of each end, WanFirstLastFrameToVideo, KSampler

    frames, size = (args.vae_frames, args.vae_size) if args.real_vae else (args.frames, args.size)
    segment = (1, 16, frames, size, size)
    ends = torch.randn(1, 16, 2, size, size, generator=generator)
    width = height = size * 8
    length = 4 * (frames - 1) + 1
    learner = ComfyDenoiser(image_model, vae=vae)

    def ours_learned():
        return denoise(learner, guidance, segment, steps=args.steps, seed=1, scheduler=args.sampler,
                       conditioning=LearnedConditioning(KnownFrames([0, frames - 1], ends)))

    def first_last_chain():
        (start,) = comfy_nodes.VAEDecode().decode(vae, {"samples": ends[:, :, :1]})
        (end,) = comfy_nodes.VAEDecode().decode(vae, {"samples": ends[:, :, 1:]})
        p, n, latent = outputs(WanFirstLastFrameToVideo.execute(*text, vae, width, height, length, 1, start_image=start,
                                                                end_image=end))
        return comfy_nodes.KSampler().sample(image_model, 1, args.steps, cfg, args.sampler, "simple", p, n, latent)[0]["samples"]

    rows = [
        ("clip", lambda: ours(1, []), lambda: ksampler(1, []), None),
        ("continuation chunk (2 known)", lambda: ours(1, [0, 1]), lambda: ksampler(1, [0, 1]), masked([0, 1])),
        ("hierarchical level (2 segments)", lambda: ours(2, [0, shape[2] - 1]), lambda: ksampler(2, [0, shape[2] - 1]),
         masked([0, shape[2] - 1])),
        ("A14B clip (two experts)", ours_experts, template_chain, None),
        ("learned infill segment (first-last frame)", ours_learned, first_last_chain, None),
    ]
    if args.rows:
        rows = [row for row in rows if any(word in row[0] for word in args.rows)]
    parameters = sum(p.numel() for p in model.model.parameters()) / 1e6
    print(f"tiny Wan 2.1 ({parameters:.1f} M parameters), latents {shape}, {args.steps} {args.sampler} steps, CFG {cfg}, "
          f"{args.repeats} repeats after a warm-up, CPU threads: {torch.get_num_threads()}")
    print(f"A14B: two tiny experts, the low-noise one from step {split}; learned infill: latents {segment} "
          f"({length} pixel frames of {width}x{height}) with {vae_name}")
    print(f"{'work':42} {'ours (s)':>9} {'ComfyUI (s)':>12} {'ratio':>7} {'CPU ratio':>10} {'max |diff|':>11}")
    worst = 0.0
    for name, our_side, their_side, compare in rows:
        a, b, cpu_ratio, difference = side_by_side(our_side, their_side, args.repeats, compare)
        worst = max(worst, a / b)
        print(f"{name:42} {a:9.3f} {b:12.3f} {a / b:7.3f} {cpu_ratio:10.3f} {difference:11.2e}", flush=True)
    print(f"goal: ours / ComfyUI <= {GOAL} on every row (wall-clock medians), max |diff| <= 1e-4; worst ratio {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
