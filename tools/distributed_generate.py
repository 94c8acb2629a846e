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
import math
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pack_import import import_pack  # noqa: E402

CONFIG_DTYPES = {"torch.float16": "fp16", "float16": "fp16", "fp16": "fp16", "torch.bfloat16": "bf16", "bfloat16": "bf16",
                 "bf16": "bf16", "torch.float32": "fp32", "float32": "fp32", "fp32": "fp32"}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


def _number(mapping: dict, key: str, where: str, kind: type, low: float, high: float, default=None):
    """A finite int or float config value in [low, high]; the message names the key."""
    if key not in mapping:
        if default is None:
            raise ConfigError(f"config key '{where}{key}' is missing")
        return default
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (kind is int and value != int(value)):
        wanted = "a whole number" if kind is int else "a finite number"
        raise ConfigError(f"config key '{where}{key}' is {value!r}: give {wanted} from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ConfigError(f"config key '{where}{key}' is {value!r}: give a value from {low:g} to {high:g}")
    return kind(value)


def read_config(config: dict) -> tuple[list, dict]:
    """(devices, the ranks' payload for sampling.distributed_launch.video_job) from a Video-Infinity style config.
    Everything the run needs is checked here, before any rank starts: numbers, the output folder and file name,
    the frame rate of the video."""
    import_pack()
    from longvideo.sampling.distributed import ClipParallelSettings
    from longvideo.utils.video_io import VideoOutputError, check_fps, check_output_prefix

    if not isinstance(config, dict):
        raise ConfigError(f"the config is a JSON {type(config).__name__}, not an object with model_path, devices and pipe_configs")

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
    if not isinstance(pipe, dict):
        raise ConfigError("config key 'pipe_configs' must be an object with prompts, num_frames, height and width")
    plugin = config.get("plugin_configs") or {}
    attention = config.get("video_infinity") or (plugin.get("attn") if isinstance(plugin, dict) else None)
    if attention is None:
        raise ConfigError("config has no 'video_infinity' (or 'plugin_configs.attn') section with padding and top_k")
    if not isinstance(attention, dict):
        raise ConfigError("config section 'video_infinity' must be an object with padding and top_k")
    if _number(attention, "attn_scale", "video_infinity.", float, -1e9, 1e9, 1.0) != 1.0:
        raise ConfigError("config key 'attn_scale' must be 1.0: other logit scales are not supported")
    prompts = need(pipe, "prompts", "pipe_configs.")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ConfigError("config key 'pipe_configs.prompts' must be a list of prompt strings")
    height = _number(pipe, "height", "pipe_configs.", int, 8, 16384)
    width = _number(pipe, "width", "pipe_configs.", int, 8, 16384)
    if height % 8 or width % 8:
        raise ConfigError(f"pipe_configs height {height} and width {width} must be multiples of 8")
    dtype = str(config.get("dtype", "auto"))
    if dtype != "auto" and dtype not in CONFIG_DTYPES:
        raise ConfigError(f"config key 'dtype' is '{dtype}': use torch.float16, torch.bfloat16 or torch.float32")

    steps = _number(pipe, "steps", "pipe_configs.", int, 1, 10000, 30)
    cfg = _number(pipe, "guidance_scale", "pipe_configs.", float, 0, 100, 9.0)
    seed = _number(config, "seed", "", int, 0, 2**64 - 1, 0)
    export_fps = _number(pipe, "export_fps", "pipe_configs.", float, 0, 1e9, 8.0)
    base_path = os.path.abspath(str(config.get("base_path", "output")))
    file_name = pipe.get("file_name") or "video_infinity"
    try:
        check_fps(export_fps, "mp4")
    except VideoOutputError as error:
        raise ConfigError(f"config key 'pipe_configs.export_fps': {error}") from None
    if not isinstance(file_name, str):
        raise ConfigError(f"config key 'pipe_configs.file_name' is {file_name!r}: give a file name such as \"video_infinity\"")
    try:
        check_output_prefix(base_path, file_name, "mp4")
    except VideoOutputError as error:
        raise ConfigError(f"config key 'pipe_configs.file_name' (in base_path {base_path}): {error}") from None

    settings = ClipParallelSettings(
        frames_per_clip=_number(pipe, "num_frames", "pipe_configs.", int, 1, 100000),
        padding=_number(attention, "padding", "video_infinity.", int, 0, 100000, 8),
        global_frames=_number(attention, "top_k", "video_infinity.", int, 0, 100000, 16),
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
        "cfg": cfg, "size": [1, height // 8, width // 8], "steps": steps,
        "seed": seed, "scheduler": str(pipe.get("scheduler", "dpmpp_2m")),
        "base_path": base_path, "file_name": file_name, "export_fps": export_fps, "config": config,
    }
    return devices, payload


def _phases(attention: dict) -> tuple:
    """(local t, local-phase local bias, local-phase global bias, global t, global-phase local bias, global-phase global bias)."""
    if not attention.get("dynamic_scale", True):
        return (0.0, 0.0, 0.0, 1000.0, 0.0, 0.0)
    local = attention.get("local_phase", {"t": 800, "local_biase": 10, "global_biase": 0})
    global_ = attention.get("global_phase", {"t": 800, "local_biase": 0, "global_biase": 10})
    for name, phase in (("local_phase", local), ("global_phase", global_)):
        if not isinstance(phase, dict):
            raise ConfigError(f"config key 'video_infinity.{name}' must be an object {{t, local_biase, global_biase}}")

    def bias(phase, where, name):
        spelling = name if name in phase else name.replace("bias", "biase")
        return _number(phase, spelling, where, float, -1e6, 1e6, 0.0)

    return (_number(local, "t", "video_infinity.local_phase.", float, 0, 1000, 800.0),
            bias(local, "video_infinity.local_phase.", "local_bias"), bias(local, "video_infinity.local_phase.", "global_bias"),
            _number(global_, "t", "video_infinity.global_phase.", float, 0, 1000, 800.0),
            bias(global_, "video_infinity.global_phase.", "local_bias"), bias(global_, "video_infinity.global_phase.", "global_bias"))


def _resolve_dtype(payload: dict, device) -> None:
    if payload["dtype"] == "auto":
        payload["dtype"] = "fp16" if device.type == "cuda" else "fp32"
    else:
        payload["dtype"] = CONFIG_DTYPES[payload["dtype"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a Video-Infinity style JSON config (see this file's docstring)")
    args = parser.parse_args()
    try:
        with open(args.config, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as error:
        raise SystemExit(f"distributed_generate: cannot read {args.config}: {error.strerror or error}") from None
    except (ValueError, RecursionError) as error:
        raise SystemExit(f"distributed_generate: {args.config} is not valid JSON ({str(error)[:200]})") from None
    try:
        devices, payload = read_config(config)
    except ConfigError as error:
        raise SystemExit(f"distributed_generate: {args.config}: {error}") from None
    from longvideo.sampling import distributed_launch as launch

    def stop(signum, frame):  # SIGTERM (kill, timeout, docker stop) stops the ranks as Ctrl+C does
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    try:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            path = _run_under_torchrun(launch, devices, payload)
        else:
            _resolve_dtype(payload, launch.parse_devices(devices)[0])
            results = launch.run_ranks(devices, "sampling.distributed_launch:video_job", payload,
                                       on_step=lambda step, total: print(f"step {step}/{total}", file=sys.stderr))
            path = results[0]
    except KeyboardInterrupt as interrupt:  # every rank has been stopped: one line, the shell's status for the signal
        terminated = bool(interrupt.args) and interrupt.args[0] == "SIGTERM"
        print(f"distributed_generate: stopped by {'SIGTERM' if terminated else 'Ctrl+C'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except launch.DistributedRunError as error:
        print(f"distributed_generate: {error}", file=sys.stderr)
        return 1
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
