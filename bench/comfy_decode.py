"""Batched against whole decoding with ComfyUI's own Wan 2.1 VAE: how far LongVideoSaveVideo's streaming decode
(ComfyVAE.decode_batches) lands from one decode of the whole latent video, with the decoder's causal cache carried
across batches and with `context` latent frames re-decoded before every batch (their pixel frames dropped).

    COMFYUI_PATH=../shared/comfyui python bench/comfy_decode.py [--frames 13] [--size 4] [--batches 4] [--contexts 0 1 2 4 8]

Needs a ComfyUI checkout ($COMFYUI_PATH, else ../shared/comfyui beside the checkout). The VAE is ComfyUI's Wan 2.1 VAE
in its full configuration (comfy.sd.VAE builds it from the state dict's keys: dim 96, 16 latent channels, 8x spatial
and 4x causal temporal compression), with seeded random weights (no model hub here): convolutions at a fan-in
scale, norms at 1, the last convolution scaled so that the decoded frames span ComfyUI's 0..1 range without saturating.
The latents are seeded standard normal, smoothed over time so that neighbouring frames are alike as in a real video.

"ours cache" is what LongVideoSaveVideo does with this VAE: the decoder's causal feature cache carried from batch to
batch (ComfyVAE.carry_cache), which must equal the whole decode. The "ours" rows re-decode `context` latent frames
instead (what it does with other video VAEs). Context 0 means no context: every batch then starts as a causal first
frame, so it decodes to one pixel frame fewer than its share (the video comes out shorter); those rows compare the
frames that exist, aligned on the batches' ends.
Prints, per batch size and context, the max and mean |difference| over all frames in 0..1 pixel values, and the max
over the first pixel frames after each batch boundary (where a seam would show); beside each, ComfyUI's own temporal
tiling (VAE Decode (Tiled): tiles of `batch` latent frames overlapping by `context`, blended) on the same VAE.
"""

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from pack_import import import_pack  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=13, help="latent frames (13 decode to 49 pixel frames)")
    parser.add_argument("--size", type=int, default=4, help="latent height and width (4: 32x32 pixels)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4], help="latent frames per decode batch")
    parser.add_argument("--contexts", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="latent frames of context")
    args = parser.parse_args()

    import comfy_env

    if not comfy_env.import_comfy_or_report():
        return 1
    import comfy.sd

    import_pack()
    from longvideo.models.comfy_model import ComfyVAE

    torch.set_grad_enabled(False)
    state = comfy_env.random_wan21_vae_state()
    probe = comfy.sd.VAE(sd=state)
    generator = torch.Generator().manual_seed(1)
    raw = torch.randn(1, 16, args.frames + 2, args.size, args.size, generator=generator)
    latents = ((raw[:, :, :-2] + raw[:, :, 1:-1] + raw[:, :, 2:]) / 3**0.5).contiguous()  # neighbours alike
    # Scale the decoder's last convolution so that the frames span 0..1 without saturating (random weights otherwise
    # give arbitrary contrast).
    head = probe.first_stage_model.decoder.head[-1]
    spread = probe.first_stage_model.decode(latents[:, :, :3]).std().item()
    state = {**state, "decoder.head.2.weight": state["decoder.head.2.weight"] * (0.5 / spread),
             "decoder.head.2.bias": state["decoder.head.2.bias"]}
    vae = comfy.sd.VAE(sd=state)
    assert type(vae.first_stage_model).__name__ == "WanVAE" and head is not None

    start = time.perf_counter()
    whole = vae.decode(latents)[0].float()  # [pixel frames, H, W, 3] in 0..1
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in vae.first_stage_model.decoder.parameters()) / 1e6
    saturated = ((whole <= 0) | (whole >= 1)).float().mean().item()
    print(f"ComfyUI Wan 2.1 VAE (dim 96, decoder {parameters:.1f} M parameters, random weights), {args.frames} latent "
          f"frames {args.size}x{args.size} -> {whole.shape[0]} pixel frames {whole.shape[2]}x{whole.shape[1]}; whole "
          f"decode {seconds:.1f} s; pixel values mean {whole.mean():.3f}, std {whole.std():.3f}, {saturated:.1%} at 0 or 1")
    print(f"{'decode':10} {'batch':>5} {'context':>7} {'frames':>6} {'max |diff|':>10} {'mean |diff|':>11} {'max at seams':>12} {'time (s)':>8}")
    for batch in args.batches:
        start = time.perf_counter()
        carried = torch.cat(list(ComfyVAE(vae, carry_cache=True).decode_batches(latents, batch)))
        seconds = time.perf_counter() - start
        difference = (carried - whole).abs()
        print(f"{'ours cache':10} {batch:5d} {'-':>7} {len(carried):6d} {difference.max().item():10.2e} "
              f"{difference.mean().item():11.2e} {'':>12} {seconds:8.1f}")
        for context in args.contexts:
            adapted = ComfyVAE(vae, context=context, carry_cache=False)
            start = time.perf_counter()
            pieces = list(adapted.decode_batches(latents, batch))
            seconds = time.perf_counter() - start
            seams, at, compared = [], 0, []
            for index, piece in enumerate(pieces):
                first_latent = index * batch
                last_pixel = adapted.pixel_frames(min(args.frames, first_latent + batch))  # frames up to this batch's end
                reference = whole[last_pixel - len(piece): last_pixel]
                difference = (piece - reference).abs()
                compared.append(difference)
                if index:
                    seams.append(difference[:4].max())
                at += len(piece)
            difference = torch.cat(compared)
            seam = max(seams).item() if seams else 0.0
            print(f"{'ours':10} {batch:5d} {context:7d} {at:6d} {difference.max().item():10.2e} {difference.mean().item():11.2e} "
                  f"{seam:12.2e} {seconds:8.1f}")
            if not 0 < context < batch:
                continue  # ComfyUI's tiling needs an overlap below the tile
            # ComfyUI's own temporal tiling (VAE Decode (Tiled): tiles of `batch` latent frames overlapping by `context`,
            # blended), one spatial tile: the same question answered ComfyUI's way, on the same VAE.
            start = time.perf_counter()
            tiled = vae.decode_tiled(latents, tile_x=args.size, tile_y=args.size, overlap=0, tile_t=batch,
                                     overlap_t=context)[0].float()
            seconds = time.perf_counter() - start
            difference = (tiled - whole).abs()
            print(f"{'VAE tiled':10} {batch:5d} {context:7d} {len(tiled):6d} {difference.max().item():10.2e} "
                  f"{difference.mean().item():11.2e} {'':>12} {seconds:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
