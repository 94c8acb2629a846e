"""What gradient checkpointing saves when training InfiNet on a frozen UNet3D (tools/train_infinet.py).

    python bench/infinet_training_memory.py [--channels 64,128,256,256] [--frames 16] [--size 32] [--device cuda]

One training step's forward + backward (InfiNet attached, condition clean, endpoints known), without and with
checkpointed blocks, side by side. Everywhere it counts the tensors autograd keeps for the backward pass, by storage:
without checkpointing all of them live at once; with it, only those outside the blocks plus, during the backward
pass, one block's own at a time (the largest is printed). On CUDA it also prints the measured peak memory.
"""

import argparse
import collections
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pack_import import import_pack  # noqa: E402

import_pack()
from longvideo.models.denoiser import KnownFrames, UNet3DDenoiser  # noqa: E402
from longvideo.models.infinet import InfiNet, InfiNetDenoiser  # noqa: E402
from longvideo.models.loader import DEFAULT_SCHEDULER_CONFIG  # noqa: E402
from longvideo.tools.train_infinet import checkpointed_blocks  # noqa: E402


def saved_by_block(unet, step):
    """MiB of storages saved for backward during `step()`, per block index ('outside' for the rest)."""
    current, owners = ["outside"], {}
    blocks = [b for b in (*unet.down_blocks, unet.mid_block, *unet.up_blocks) if b is not None]
    handles = []
    for index, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, i=index: current.__setitem__(0, i)))
        handles.append(block.register_forward_hook(lambda m, a, o: current.__setitem__(0, "outside")))

    def pack(tensor):
        storage = tensor.untyped_storage()
        owners.setdefault(storage.data_ptr(), (current[0], storage.nbytes()))
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        for handle in handles:
            handle.remove()
    totals = collections.Counter()
    for owner, size in owners.values():
        totals[owner] += size / 2**20
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", default="64,128,256,256", help="block_out_channels (ModelScope: 320,640,1280,1280)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="latent side (pixels / 8)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    from diffusers import UNet3DConditionModel

    channels = tuple(int(c) for c in args.channels.split(","))
    unet = UNet3DConditionModel(block_out_channels=channels, layers_per_block=2, cross_attention_dim=64,
                                attention_head_dim=8, norm_num_groups=32).eval().requires_grad_(False).to(device)
    denoiser = InfiNetDenoiser(UNet3DDenoiser(unet, DEFAULT_SCHEDULER_CONFIG), InfiNet.for_unet_config(unet.config).to(device))
    latents = torch.randn(1, 4, args.frames, args.size, args.size, device=device)
    context = torch.randn(1, 77, 64, device=device)
    known = KnownFrames([0, args.frames - 1], latents[:, :, [0, args.frames - 1]])

    rows = []
    for checkpointing in (False, True):
        def step():
            with checkpointed_blocks(unet, checkpointing), denoiser.conditioned(latents, known):
                denoiser.base(latents, torch.tensor([500], device=device), context).pow(2).mean().backward()

        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        totals = saved_by_block(unet, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        rows.append((checkpointing, totals, seconds, peak))

    whole = sum(rows[0][1].values())
    largest = max(v for k, v in rows[0][1].items() if k != "outside")
    print(f"UNet3D channels {channels}, {args.frames} frames, latents {args.size}x{args.size}, {device}")
    print(f"{'checkpointing':>13} | kept for backward (MiB) | at most during backward (MiB) | seconds | CUDA peak (MiB)")
    for checkpointing, totals, seconds, peak in rows:
        kept = sum(totals.values())
        worst = kept + largest if checkpointing else kept
        print(f"{str(checkpointing):>13} | {kept:23.0f} | {worst:29.0f} | {seconds:7.2f} | {peak if peak is None else round(peak)}")
    print(f"saved-tensor memory with / without checkpointing: {(sum(rows[1][1].values()) + largest) / whole:.2f}")


if __name__ == "__main__":
    main()
