"""Clip-parallel sampling (Video-Infinity): virtual ranks, gloo processes, the node, the config tool, faults."""

import dataclasses
import importlib.util
import os
import signal
import threading
import time

import psutil
import pytest
import torch

from longvideo.attention.temporal import DualScopeAttention, global_frame_indices
from longvideo.models.clip_parallel import ClipDenoiser, clip_parallel_hooks
from longvideo.models.loader import load_text_to_video
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.distributed import LongVideoDistributedSampler
from longvideo.sampling import distributed_launch
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.distributed import (
    ClipParallelSettings, ClipRankError, VirtualGroup, clip_prompt_index, clip_seed, join_clips, sample_virtual,
)
from tiny_models import CONTEXT_WIDTH, tiny_components

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (1, 8, 8)
PROCESS_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """The tiny model with its zero-initialised temporal layers (TemporalConvLayer.conv4) made random, so that the
    temporal convolutions, and with them the halos, change the result."""
    from diffusers import TextToVideoSDPipeline

    unet, vae, text_encoder, tokenizer, scheduler = tiny_components()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".temp_convs." in name and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    folder = str(tmp_path_factory.mktemp("models") / "tiny-temporal")
    TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_folder):
    return load_text_to_video(model_folder).denoiser


def embeddings(seed):
    return torch.randn(1, 7, CONTEXT_WIDTH, generator=torch.Generator().manual_seed(seed))


PROMPTS = [TextGuidance(embeddings(1), embeddings(0), 7.5), TextGuidance(embeddings(2), embeddings(0), 7.5)]


def run_virtual_ranks(unet, ranks, call):
    """call(rank, group) in one thread per virtual rank, inside the clip-parallel hooks; returns the results."""
    group, results, errors = VirtualGroup(ranks), [None] * ranks, []

    def run(rank):
        try:
            results[rank] = call(rank, group)
        except BaseException as error:
            errors.append(error)
            group.abort()

    with clip_parallel_hooks(unet), torch.no_grad():
        threads = [threading.Thread(target=run, args=(rank,)) for rank in range(ranks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize(("ranks", "frames", "padding", "global_frames"), [(2, 5, 5, 0), (3, 6, 3, 4), (3, 8, 8, 5)])
def test_clip_parallel_model_equals_the_full_video_model(model, ranks, frames, padding, global_frames):
    """With GroupNorm statistics synced and padding <= F, the R clips' predictions are the full-video model's with
    dual-scope attention: halos and global frames carry exactly what the full video has."""
    scope = DualScopeAttention(padding=padding, global_frames=global_frames)
    latents = torch.randn(2, 4, ranks * frames, 8, 8, generator=torch.Generator().manual_seed(3))
    context, timestep = torch.cat([embeddings(0), embeddings(1)]), torch.tensor(900)
    with torch.no_grad():
        full = model.with_temporal_attention(scope)(latents, timestep, context)

    def clip(rank, group, sync=True):
        denoiser = ClipDenoiser(model, group.communicator(rank), scope, sync_group_norm=sync, device="cpu")
        return denoiser(latents[:, :, rank * frames : (rank + 1) * frames], timestep, context)

    assert (torch.cat(run_virtual_ranks(model.unet, ranks, clip), dim=2) - full).abs().max() <= 1e-5
    # Per-clip statistics (the reference code's choice) only approximate the full video.
    per_clip = torch.cat(run_virtual_ranks(model.unet, ranks, lambda r, g: clip(r, g, sync=False)), dim=2)
    assert (per_clip - full).abs().max() > 1e-3
    # The hooks are gone afterwards: the stock model again.
    assert "forward" not in vars(model.unet.down_blocks[0].temp_convs[0])
    assert not any(type(p).__name__ == "ClipAttentionProcessor" for p in model.unet.attn_processors.values())


def test_bytes_exchanged_per_call_do_not_depend_on_clip_length(model):
    scope = DualScopeAttention(padding=4, global_frames=4)
    received = {}
    for frames in (8, 16):
        latents = torch.randn(1, 4, 2 * frames, 8, 8)

        def clip(rank, group):
            denoiser = ClipDenoiser(model, group.communicator(rank), scope, device="cpu")
            denoiser(latents[:, :, rank * frames : (rank + 1) * frames], torch.tensor(500), embeddings(1))
            return denoiser.comm.bytes_received

        received[frames] = run_virtual_ranks(model.unet, 2, clip)
    assert received[8] == received[16] and received[8][0] > 0


def test_one_rank_with_a_window_covering_the_clip_is_the_plain_sampler(model):
    settings = ClipParallelSettings(frames_per_clip=6, padding=6, global_frames=0)
    clipped = join_clips(sample_virtual(model, PROMPTS[:1], settings, 1, size=SIZE, steps=2, seed=11, scheduler="euler_ancestral"))
    plain = denoise(model, PROMPTS[0], (1, 4, 6, 8, 8), steps=2, seed=11, scheduler="euler_ancestral")
    assert (clipped - plain).abs().max() <= 1e-5


def test_clips_get_their_own_seed_and_prompt():
    assert clip_seed(7, 0) == 7 and len({clip_seed(7, r) for r in range(8)}) == 8 and clip_seed(7, 1) != clip_seed(8, 0)
    assert [clip_prompt_index(r, 8, 8) for r in range(8)] == list(range(8))
    assert [clip_prompt_index(r, 3, 2) for r in range(3)] == [0, 0, 1]
    assert [clip_prompt_index(r, 4, 1) for r in range(4)] == [0, 0, 0, 0]


def video_infinity_global_frames(frames, top_k, ranks):
    """The reference code's global frames (AttentionPlugin.get_topk): top_k // R per clip at a per-clip stride."""
    share = top_k // ranks
    stride = max(frames // share, 1) if share else 10**6
    return [r * frames + i for r in range(ranks) for i in range(0, frames, stride)][:top_k]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_global_frames_are_video_infinitys_in_its_setting(ranks):
    assert global_frame_indices(ranks * 24, 16) == video_infinity_global_frames(24, 16, ranks)


def sample_payload(model_folder, settings, steps=2, seed=5):
    return {
        "model_path": model_folder, "dtype": "fp32", "settings": {**dataclasses.asdict(settings), "phases": list(settings.phases)},
        "prompts": [[p.positive.numpy(), p.negative.numpy()] for p in PROMPTS], "cfg": 7.5, "size": list(SIZE),
        "steps": steps, "seed": seed, "scheduler": "ddim",
    }


@pytest.mark.parametrize("ranks", [2, 3])
def test_gloo_processes_match_the_virtual_ranks(model, model_folder, ranks):
    settings = ClipParallelSettings(frames_per_clip=6, padding=3, global_frames=4)
    virtual = sample_virtual(model, PROMPTS, settings, ranks, size=SIZE, steps=2, seed=5)
    steps_seen = []
    processes = distributed_launch.run_ranks(["cpu"] * ranks, "sampling.distributed_launch:sample_job",
                                             sample_payload(model_folder, settings), timeout_s=PROCESS_TIMEOUT_S,
                                             on_step=lambda step, total: steps_seen.append((step, total)))
    joined = torch.cat([torch.from_numpy(result["latents"]) for result in processes], dim=2)
    assert joined.shape == (1, 4, ranks * 6, 8, 8)
    assert (joined - join_clips(virtual)).abs().max() <= 1e-5
    # Every rank stepped through the same timesteps, the virtual ranks' ones.
    assert all(result["timesteps"] == virtual[0].timesteps for result in processes) and len(virtual[0].timesteps) == 2
    assert steps_seen == [(1, 2), (2, 2)]


def no_process_left(pids) -> bool:
    return not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_a_killed_worker_stops_the_run_and_leaves_no_process(model_folder):
    settings = ClipParallelSettings(frames_per_clip=4, padding=2, global_frames=2)
    pids, killed_at = [], []

    def kill_rank_1(step, total):
        if step == 1:
            os.kill(pids[1], signal.SIGKILL)
            killed_at.append(time.monotonic())

    with pytest.raises(distributed_launch.DistributedRunError, match="rank 1 failed: its process died .killed by SIGKILL") as raised:
        distributed_launch.run_ranks(["cpu", "cpu"], "sampling.distributed_launch:sample_job",
                                     sample_payload(model_folder, settings, steps=500), timeout_s=PROCESS_TIMEOUT_S,
                                     on_start=pids.extend, on_step=kill_rank_1)
    assert raised.value.rank == 1 and time.monotonic() - killed_at[0] < 30
    assert no_process_left(pids)


def test_cancel_stops_every_worker_process(model_folder):
    pids, calls = [], []

    def cancel():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distributed_launch.run_ranks(["cpu"] * 3, "sampling.distributed_launch:sample_job",
                                     sample_payload(model_folder, ClipParallelSettings(4)), on_start=pids.extend, check_cancel=cancel)
    assert len(pids) == 3 and no_process_left(pids)


def test_a_failing_virtual_rank_is_named_and_stops_the_others(model):
    settings = ClipParallelSettings(frames_per_clip=4, padding=2, global_frames=2)
    wrong_width = torch.randn(1, 7, CONTEXT_WIDTH + 1)
    broken = TextGuidance(wrong_width, wrong_width, 7.5)  # clip 1's model call raises in its text cross-attention
    with pytest.raises(ClipRankError, match="rank 1 failed"):
        sample_virtual(model, [PROMPTS[0], broken], settings, 2, size=SIZE, steps=2, seed=1)
    assert not [t for t in threading.enumerate() if t.name.startswith("longvideo-clip-")]


def test_cancel_stops_every_virtual_rank(model):
    settings = ClipParallelSettings(frames_per_clip=4, padding=2, global_frames=2)

    def cancel(step, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_virtual(model, PROMPTS, settings, 3, size=SIZE, steps=50, seed=1, on_step=cancel)
    assert not [t for t in threading.enumerate() if t.name.startswith("longvideo-clip-")]
    assert "forward" not in vars(model.unet.down_blocks[0].temp_convs[0])


def test_ranks_out_of_step_are_an_error(model):
    scope = DualScopeAttention(padding=2, global_frames=0)

    def clip(rank, group):
        denoiser = ClipDenoiser(model, group.communicator(rank), scope, device="cpu")
        return denoiser(torch.randn(1, 4, 4, 8, 8), torch.tensor(500 + rank), embeddings(1))

    with pytest.raises(RuntimeError, match="out of step.*rank 0: t=500.*rank 1: t=501"):
        run_virtual_ranks(model.unet, 2, clip)


def test_node_runs_virtual_ranks_and_checks_its_inputs(model):
    node = LongVideoDistributedSampler()
    arguments = dict(model=model, positive=[[embeddings(1), {}]], negative=[[embeddings(0), {}]], width=64, height=64, devices="",
                     virtual_ranks=3, frames_per_clip=4, padding=2, global_frames=3, local_phase_t=800.0, local_phase_local_bias=10.0,
                     local_phase_global_bias=0.0, global_phase_t=800.0, global_phase_local_bias=0.0, global_phase_global_bias=10.0,
                     token_num_scale=False, sync_group_norm=True, seed=3, steps=2, cfg=7.5, scheduler="ddim")
    latents = node.sample(**arguments)[0]["samples"]
    settings = ClipParallelSettings(4, 2, 3)
    expected = join_clips(sample_virtual(model, [TextGuidance(embeddings(1), embeddings(0), 7.5)], settings, 3, size=SIZE, steps=2, seed=3))
    assert torch.equal(latents, expected)
    with pytest.raises(NodeInputError, match="device 'gpu:7'"):
        node.sample(**{**arguments, "devices": "gpu:7"})
    with pytest.raises(NodeInputError, match="already has a temporal attention mode"):
        node.sample(**{**arguments, "model": model.with_temporal_attention(DualScopeAttention())})


def load_tool():
    spec = importlib.util.spec_from_file_location("distributed_generate", os.path.join(ROOT, "tools", "distributed_generate.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def video_infinity_config(model_folder, **attention):
    """examples/config.json of Video-Infinity, shrunk, with the model folder added."""
    return {
        "dtype": "torch.float16", "devices": [0, 1, 2, 3], "seed": 123, "master_port": 29516, "base_path": "./exp",
        "model_path": model_folder,
        "pipe_configs": {"prompts": ["a beagle", "a cat"], "steps": 30, "guidance_scale": 12, "fps": 24, "num_frames": 24,
                         "height": 320, "width": 512, "export_fps": 8, "file_name": None},
        "plugin_configs": {"attn": {"padding": 8, "top_k": 16, "top_k_chunk_size": 24, "attn_scale": 1.0, "token_num_scale": False,
                                    "dynamic_scale": True, "local_phase": {"t": 850, "local_biase": 10, "global_biase": 0},
                                    "global_phase": {"t": 800, "local_biase": 0, "global_biase": 10}, **attention},
                           "conv_3d": {"padding": 1}, "conv_layer": {}},
    }


def test_tool_reads_video_infinity_configs(model_folder):
    tool = load_tool()
    devices, payload = tool.read_config(video_infinity_config(model_folder))
    assert devices == [0, 1, 2, 3] and payload["prompts"] == ["a beagle", "a cat"] and payload["size"] == [1, 40, 64]
    assert payload["settings"]["frames_per_clip"] == 24 and payload["settings"]["padding"] == 8
    assert payload["settings"]["global_frames"] == 16 and payload["settings"]["phases"] == [850.0, 10.0, 0.0, 800.0, 0.0, 10.0]
    assert payload["cfg"] == 12.0 and payload["steps"] == 30 and payload["dtype"] == "torch.float16" and payload["seed"] == 123
    # The section name and the corrected spellings read the same.
    config = video_infinity_config(model_folder)
    config["video_infinity"] = {"padding": 4, "top_k": 2, "token_num_scale": True,
                                "local_phase": {"t": 700, "local_bias": 5, "global_bias": 1},
                                "global_phase": {"t": 900, "local_bias": 2, "global_bias": 3}}
    settings = tool.read_config(config)[1]["settings"]
    assert (settings["padding"], settings["global_frames"], settings["token_num_scale"]) == (4, 2, True)
    assert settings["phases"] == [700.0, 5.0, 1.0, 900.0, 2.0, 3.0]
    with pytest.raises(tool.ConfigError, match="attn_scale"):
        tool.read_config(video_infinity_config(model_folder, attn_scale=2.0))
    with pytest.raises(tool.ConfigError, match="model_path"):
        tool.read_config({k: v for k, v in video_infinity_config(model_folder).items() if k != "model_path"})
