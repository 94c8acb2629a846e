"""Generate one long video clip-parallel (Video-Infinity) from a config file.

    torchrun --nproc_per_node 2 tools/distributed_generate.py --config CONFIG.json   (torchrun: any number of machines)
    python tools/distributed_generate.py --config CONFIG.json                        (one process per listed device, here)

The config takes Video-Infinity's keys (examples/config.json of Yuanshi9815/Video-Infinity) plus the model folder:

    model_path (or model)   a diffusers text-to-video folder (Zeroscope, ModelScope); required
    devices                 one device per rank: CUDA indices (0, 1, ...), "cuda:N" or "cpu". Under torchrun, the
                            local rank picks its entry.
    seed, base_path, dtype  noise seed; output folder; "torch.float16" / "fp16" / "fp32" / "bf16" (default: auto)
    pipe_configs            prompts (clip r uses prompts[floor(r * len / R)]), steps, guidance_scale, num_frames
                            (frames PER RANK), height, width, export_fps, file_name; ours: negative_prompt, scheduler
    video_infinity          padding, top_k, local_phase / global_phase ({t, local_biase, global_biase}; the spellings
    (or plugin_configs.attn) local_bias / global_bias work too), token_num_scale, dynamic_scale (false: no phase biases),
                            attn_scale (only 1.0); ours: reference_mode (default true: compute what Video-Infinity's
                            code computes, zero end halos and per-rank GroupNorm included), sync_group_norm (whole-video
                            GroupNorm; only with reference_mode false, where it defaults to true)

Ignored, as in the original or because ports are picked free: master_port, pipe_configs.fps, top_k_chunk_size,
plugin_configs.conv_3d and conv_layer. The video and a copy of the config are written to base_path.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pack_import import import_pack  # noqa: E402

CONFIG_DTYPES = {"torch.float16": "fp16", "float16": "fp16", "fp16": "fp16", "torch.bfloat16": "bf16", "bfloat16": "bf16",
                 "bf16": "bf16", "torch.float32": "fp32", "float32": "fp32", "fp32": "fp32"}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


def read_config(config: dict) -> tuple[list, dict]:
    """(devices, the ranks' payload for sampling.distributed_launch.video_job) from a Video-Infinity style config."""
    import_pack()
    from longvideo.sampling.distributed import ClipParallelSettings

    def need(mapping, key, where):
        if key not in mapping:
            raise ConfigError(f"config key '{where}{key}' is missing")
        return mapping[key]

    model_path = config.get("model_path") or config.get("model")
    if not model_path:
        raise ConfigError("config key 'model_path' is missing: give the folder of a diffusers text-to-video model")
    devices = need(config, "devices", "")
    if not isinstance(devices, list) or not devices:
        raise ConfigError("config key 'devices' must be a list with one device per rank, e.g. [0, 1] or [\"cpu\", \"cpu\"]")
    pipe = need(config, "pipe_configs", "")
    attention = config.get("video_infinity") or config.get("plugin_configs", {}).get("attn")
    if attention is None:
        raise ConfigError("config has no 'video_infinity' (or 'plugin_configs.attn') section with padding and top_k")
    if float(attention.get("attn_scale", 1.0)) != 1.0:
        raise ConfigError("config key 'attn_scale' must be 1.0: other logit scales are not supported")
    prompts = need(pipe, "prompts", "pipe_configs.")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ConfigError("config key 'pipe_configs.prompts' must be a list of prompt strings")
    height, width = int(need(pipe, "height", "pipe_configs.")), int(need(pipe, "width", "pipe_configs."))
    if height % 8 or width % 8:
        raise ConfigError(f"pipe_configs height {height} and width {width} must be multiples of 8")
    dtype = str(config.get("dtype", "auto"))
    if dtype != "auto" and dtype not in CONFIG_DTYPES:
        raise ConfigError(f"config key 'dtype' is '{dtype}': use torch.float16, torch.bfloat16 or torch.float32")

    settings = ClipParallelSettings(
        frames_per_clip=int(need(pipe, "num_frames", "pipe_configs.")),
        padding=int(attention.get("padding", 8)),
        global_frames=int(attention.get("top_k", 16)),
        phases=_phases(attention),
        token_num_scale=bool(attention.get("token_num_scale", False)),
        sync_group_norm=bool(attention.get("sync_group_norm", not attention.get("reference_mode", True))),
        reference=bool(attention.get("reference_mode", True)),
    )
    try:
        settings.check()
    except ValueError as error:
        raise ConfigError(f"config: {error}") from None
    payload = {
        "model_path": os.path.abspath(model_path), "dtype": dtype, "prompts": prompts,
        "negative_prompt": str(pipe.get("negative_prompt", "")), "settings": {**vars(settings), "phases": list(settings.phases)},
        "cfg": float(pipe.get("guidance_scale", 9.0)), "size": [1, height // 8, width // 8], "steps": int(pipe.get("steps", 30)),
        "seed": int(config.get("seed", 0)), "scheduler": str(pipe.get("scheduler", "dpmpp_2m")),
        "base_path": os.path.abspath(config.get("base_path", "output")), "file_name": pipe.get("file_name") or "video_infinity",
        "export_fps": float(pipe.get("export_fps", 8)), "config": config,
    }
    return devices, payload


def _phases(attention: dict) -> tuple:
    """(local t, local-phase local bias, local-phase global bias, global t, global-phase local bias, global-phase global bias)."""
    if not attention.get("dynamic_scale", True):
        return (0.0, 0.0, 0.0, 1000.0, 0.0, 0.0)
    local = attention.get("local_phase", {"t": 800, "local_biase": 10, "global_biase": 0})
    global_ = attention.get("global_phase", {"t": 800, "local_biase": 0, "global_biase": 10})

    def bias(phase, name):
        return float(phase.get(name, phase.get(name.replace("bias", "biase"), 0.0)))

    return (float(local.get("t", 800)), bias(local, "local_bias"), bias(local, "global_bias"),
            float(global_.get("t", 800)), bias(global_, "local_bias"), bias(global_, "global_bias"))


def _resolve_dtype(payload: dict, device) -> None:
    if payload["dtype"] == "auto":
        payload["dtype"] = "fp16" if device.type == "cuda" else "fp32"
    else:
        payload["dtype"] = CONFIG_DTYPES[payload["dtype"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a Video-Infinity style JSON config (see this file's docstring)")
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as handle:
        devices, payload = read_config(json.load(handle))
    from longvideo.sampling import distributed_launch as launch

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        path = _run_under_torchrun(launch, devices, payload)
    else:
        _resolve_dtype(payload, launch.parse_devices(devices)[0])
        results = launch.run_ranks(devices, "sampling.distributed_launch:video_job", payload,
                                   on_step=lambda step, total: print(f"step {step}/{total}", file=sys.stderr))
        path = results[0]
    if path:
        print(path)
    return 0


def _run_under_torchrun(launch, devices, payload):
    import torch
    import torch.distributed as dist

    from longvideo.sampling.distributed import TorchCommunicator

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if local >= len(devices):
        raise ConfigError(f"local rank {local} has no entry in 'devices' ({devices}): list one device per process on each machine")
    device = launch.parse_devices([devices[local]])[0]
    _resolve_dtype(payload, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(launch.backend_for(device))
    try:
        report = (lambda step, total: print(f"step {step}/{total}", file=sys.stderr)) if rank == 0 else (lambda step, total: None)
        context = launch.RankContext(rank, world, device, TorchCommunicator(device), report)
        return launch.video_job(context, payload)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
