"""Our sampler's time over diffusers' TextToVideoSDPipeline for the same work, measured side by side.

    python bench/sampler_overhead.py                       # small UNet3D on the CPU
    python bench/sampler_overhead.py --config modelscope --device cuda --dtype fp16 \
        --width 576 --height 320 --frames 24 --steps 10    # full-size ModelScope UNet3D, random weights

Both sides get the same random model, prompt, scheduler, steps, CFG and seed. "Ours" is what
LongVideoSampler does (text encoding + the denoising loop), "diffusers" is the pipeline with
output_type="latent". Runs alternate (ours, diffusers, ours, ...) after a warm-up so that machine
noise hits both alike; the table shows medians and the ratio.
"""

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pack_import import import_pack  # noqa: E402

CONFIGS = {
    # For dry runs of bench/gpu_suite.py: the tests' tiny UNet3D shape.
    "tiny": dict(block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=32, attention_head_dim=4,
                 down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                 norm_num_groups=4),
    # Small enough for the CPU, big enough that the network, not Python, dominates a step.
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=1, cross_attention_dim=256, attention_head_dim=8,
                  down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"), norm_num_groups=32),
    # damo-vilab/text-to-video-ms-1.7b unet/config.json (Zeroscope v2 uses the same).
    "modelscope": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                       attention_head_dim=64, down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                       up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3, norm_num_groups=32),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build(config: str, dtype: torch.dtype, device: str):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from tiny_models import tiny_tokenizer

    torch.manual_seed(0)
    unet = UNet3DConditionModel(in_channels=4, out_channels=4, sample_size=32, **CONFIGS[config])
    tokenizer = tiny_tokenizer()
    width = unet.config.cross_attention_dim
    text_model = CLIPTextModel(CLIPTextConfig(hidden_size=width, intermediate_size=width * 4, num_attention_heads=8,
                                              num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=77,
                                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                              pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(8,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    for module in (unet, text_model, vae):
        module.to(device, dtype).eval().requires_grad_(False)
    return unet, text_model, tokenizer, vae, scheduler


def side_by_side(components, device: str, *, width: int, height: int, frames: int, steps: int, scheduler: str,
                 repeats: int, cfg: float = 7.5) -> dict:
    """Seconds of our sampler and of diffusers' pipeline for the same work, alternating after one warm-up of each.

    `components` is what `build` returns. Returns {"ours": [s, ...], "diffusers": [s, ...], "difference": max |latents|}.
    """
    from diffusers import TextToVideoSDPipeline
    from diffusers.utils import logging as diffusers_logging

    from longvideo.models.denoiser import UNet3DDenoiser
    from longvideo.models.text_encoder import TextEncoder
    from longvideo.sampling.denoise import TextGuidance, denoise
    from longvideo.sampling.schedulers import make_scheduler

    diffusers_logging.set_verbosity_error()
    unet, text_model, tokenizer, vae, base_scheduler = components
    denoiser = UNet3DDenoiser(unet, dict(base_scheduler.config))
    text_encoder = TextEncoder(tokenizer, text_model)
    pipeline = TextToVideoSDPipeline(vae=vae, text_encoder=text_model, tokenizer=tokenizer, unet=unet,
                                     scheduler=make_scheduler(scheduler, dict(base_scheduler.config)))
    pipeline.set_progress_bar_config(disable=True)
    shape = (1, 4, frames, height // 8, width // 8)
    prompt, negative = "a red circle moving right", "blurry"

    def ours():
        positive, _ = text_encoder.encode([prompt])
        negative_tokens, _ = text_encoder.encode([negative])
        return denoise(denoiser, TextGuidance(positive, negative_tokens, cfg), shape, steps=steps, seed=1,
                       scheduler=scheduler)

    def theirs():
        return pipeline(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=cfg,
                        height=height, width=width, num_frames=frames,
                        generator=torch.Generator("cpu").manual_seed(1), output_type="latent").frames

    def timed(run):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    with torch.inference_mode():
        _, a = timed(ours)
        _, b = timed(theirs)
        difference = (a.float().cpu() - b.float().cpu()).abs().max().item()
        times = {"ours": [], "diffusers": []}
        for _ in range(repeats):
            times["ours"].append(timed(ours)[0])
            times["diffusers"].append(timed(theirs)[0])
    return {**times, "difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scheduler", default="dpmpp_2m")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import_pack()
    components = build(args.config, DTYPES[args.dtype], args.device)
    unet = components[0]
    measured = side_by_side(components, args.device, width=args.width, height=args.height, frames=args.frames,
                            steps=args.steps, scheduler=args.scheduler, repeats=args.repeats)
    difference = measured.pop("difference")
    times = measured

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.config} UNet3D ({sum(p.numel() for p in unet.parameters()) / 1e6:.0f} M parameters), {args.dtype} on "
          f"{device_name}, {args.width}x{args.height}x{args.frames} frames, {args.steps} {args.scheduler} steps, CFG 7.5, "
          f"{args.repeats} alternating runs after a warm-up; max |ours - diffusers| = {difference:.2e}")
    print(f"{'':12}{'median s':>10}{'s / step':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:12}{median:10.3f}{median / args.steps:10.4f}")
    ratio = statistics.median(times["ours"]) / statistics.median(times["diffusers"])
    print(f"ratio ours / diffusers: {ratio:.3f}")


if __name__ == "__main__":
    main()
