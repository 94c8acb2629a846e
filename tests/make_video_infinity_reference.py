"""Run Video-Infinity's own plugins (Yuanshi9815/Video-Infinity, src/video_infinity) on the tiny case of
tests/video_infinity_case.py over 3 gloo processes and store every rank's UNet output (not run by pytest).

    python tests/make_video_infinity_reference.py --checkout PATH/TO/Video-Infinity [--out FILE]

The default output is tests/data/video_infinity_reference.safetensors. The original's files are imported from the
checkout unchanged; only what a CPU and gloo need is patched at run time, outside its files:
- torch.cuda.synchronize (called after every halo exchange) does nothing;
- DistController (NCCL, CUDA devices) is replaced by the same fields over a gloo group, with the same 2-rank
  neighbour groups (dist.new_group([i, i + 1]));
- imageio (imported by src/tools.py for saving videos) is stubbed when it is not installed.
DistWrapper mounts the plugins exactly as in the original (UNet, attention and TemporalConvLayer plugins); the UNet
is then called directly (timestep positional, as the pipeline does) instead of through a text-to-video pipeline.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def worker(rank, world, port, checkout, folder):
    import torch
    import torch.distributed as dist

    import video_infinity_case as case

    import diffusers  # noqa: F401  (before any stub: diffusers probes the installed packages)

    torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        import imageio  # noqa: F401
    except ImportError:
        sys.modules["imageio"] = types.ModuleType("imageio")
    sys.path.insert(0, checkout)
    from src.video_infinity.wrapper import DistWrapper
    from safetensors.torch import save_file

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        controller = types.SimpleNamespace(rank=rank, world_size=world, is_master=rank == 0, device=torch.device("cpu"),
                                           adj_groups=[dist.new_group([i, i + 1]) for i in range(world - 1)])
        unet = case.exact_unet()
        latents, context = case.inputs()
        clip = latents[:, :, rank * case.FRAMES:(rank + 1) * case.FRAMES]
        wrapper = DistWrapper(types.SimpleNamespace(unet=unet), controller, {})
        outputs = {}
        for name, (top_k, token_num_scale) in case.CASES.items():
            wrapper.global_state.set("plugin_configs", case.plugin_configs(top_k, token_num_scale))
            for timestep in case.TIMESTEPS:
                with torch.no_grad():
                    sample = unet(clip, torch.tensor(timestep), encoder_hidden_states=context).sample
                outputs[case.output_key(name, timestep, rank)] = sample.contiguous()
        save_file(outputs, os.path.join(folder, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def run(checkout: str, out: str, commit: str = "") -> None:
    import torch
    import torch.multiprocessing as mp
    from safetensors.torch import load_file, save_file

    import video_infinity_case as case

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(case.RANKS, port, os.path.abspath(checkout), folder), nprocs=case.RANKS, join=True)
        outputs = {}
        for rank in range(case.RANKS):
            outputs.update(load_file(os.path.join(folder, f"rank{rank}.safetensors")))
    latents, context = case.inputs()
    if not commit:
        try:
            commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = ""
    import diffusers

    save_file({"latents": latents, "context": context, **outputs}, out, metadata={
        "source": "Yuanshi9815/Video-Infinity src/video_infinity (plugins.py, wrapper.py)", "commit": commit or "unknown",
        "diffusers": diffusers.__version__, "torch": torch.__version__,
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True, help="a checkout of Yuanshi9815/Video-Infinity (holds src/video_infinity)")
    parser.add_argument("--out", default=os.path.join(HERE, "data", "video_infinity_reference.safetensors"))
    parser.add_argument("--commit", default="", help="the checkout's commit, recorded in the file (read with git when omitted)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.checkout, "src", "video_infinity", "plugins.py")):
        parser.error(f"{args.checkout} has no src/video_infinity/plugins.py: give a Video-Infinity checkout")
    run(args.checkout, args.out, args.commit)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
