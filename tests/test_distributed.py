"""Clip-parallel sampling (Video-Infinity): virtual ranks, gloo processes, the node, the config tool, faults."""

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from longvideo.attention.temporal import DualScopeAttention, global_frame_indices
from longvideo.models.clip_parallel import ClipDenoiser, clip_parallel_hooks, reference_global_frames
from longvideo.models.denoiser import UNet3DDenoiser
from longvideo.models.loader import load_text_to_video
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.distributed import LongVideoDistributedSampler
from longvideo.sampling import distributed_launch
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.distributed import (
    ClipParallelSettings, ClipRankError, VirtualGroup, clip_prompt_index, clip_seed, join_clips, sample_virtual,
)
from tiny_models import CONTEXT_WIDTH, tiny_components
import video_infinity_case as vi_case

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


def test_reference_global_frames_are_video_infinitys_everywhere():
    for frames, top_k, ranks in [(24, 16, 3), (8, 5, 3), (8, 16, 3), (5, 16, 5), (4, 2, 3), (6, 0, 2), (24, 16, 17)]:
        assert reference_global_frames(frames, top_k, ranks) == video_infinity_global_frames(frames, top_k, ranks)
    assert global_frame_indices(24, 5) != reference_global_frames(8, 5, 3)  # where the default mode differs


# ---------------------------------------------------------------------------------------------------
# reference mode against Video-Infinity's own plugins (tests/make_video_infinity_reference.py)


def reference_mode_outputs(unet, latents, context, top_k, token_num_scale, timestep, reference=True):
    """Every rank's UNet output for one forward of the tiny case, in reference (or default) mode."""
    settings = ClipParallelSettings(vi_case.FRAMES, vi_case.PADDING, top_k, (800, 10, 0, 800, 0, 10), token_num_scale,
                                    sync_group_norm=not reference, reference=reference)
    settings.check()
    model = UNet3DDenoiser(unet, {})
    frames = vi_case.FRAMES

    def clip(rank, group):
        denoiser = ClipDenoiser(model, group.communicator(rank), settings.scope(), settings.sync_group_norm, "cpu", settings.reference)
        return denoiser(latents[:, :, rank * frames : (rank + 1) * frames], torch.tensor(timestep), context)

    return run_virtual_ranks(unet, vi_case.RANKS, clip)


def check_against_video_infinity(expected: dict, tolerance=1e-4):
    unet = vi_case.exact_unet()
    latents, context = expected["latents"], expected["context"]
    for name, (top_k, token_num_scale) in vi_case.CASES.items():
        for timestep in vi_case.TIMESTEPS:
            ours = reference_mode_outputs(unet, latents, context, top_k, token_num_scale, timestep)
            for rank, output in enumerate(ours):
                difference = (output - expected[vi_case.output_key(name, timestep, rank)]).abs().max()
                assert difference <= tolerance, (name, timestep, rank, float(difference))
    return unet


def test_reference_mode_is_video_infinitys_output():
    """One UNet forward per rank (3 ranks, 8 frames, padding 2) against the vectors Video-Infinity's plugins made over 3
    gloo processes: top_k 6 and 5, token_num_scale on and off, a global-phase and a local-phase timestep."""
    expected = load_file(os.path.join(ROOT, "tests", "data", "video_infinity_reference.safetensors"))
    latents, context = vi_case.inputs()
    assert torch.equal(expected["latents"], latents) and torch.equal(expected["context"], context)
    unet = check_against_video_infinity(expected)
    # The default mode (no zero keys at the ends, whole-video GroupNorm and global frames) differs everywhere.
    default = reference_mode_outputs(unet, latents, context, 5, True, 900, reference=False)
    for rank, output in enumerate(default):
        assert (output - expected[vi_case.output_key("k5_tns", 900, rank)]).abs().max() > 0.1


def test_reference_mode_against_a_video_infinity_checkout(tmp_path):
    """Reruns Video-Infinity's plugins from the checkout in VIDEO_INFINITY_CHECKOUT (3 gloo processes) and compares."""
    checkout = os.environ.get("VIDEO_INFINITY_CHECKOUT")
    if not checkout:
        pytest.skip("set VIDEO_INFINITY_CHECKOUT to a checkout of Yuanshi9815/Video-Infinity to rerun the original")
    if not os.path.isfile(os.path.join(checkout, "src", "video_infinity", "plugins.py")):
        pytest.skip(f"VIDEO_INFINITY_CHECKOUT={checkout} holds no src/video_infinity/plugins.py")
    out = tmp_path / "rerun.safetensors"
    script = os.path.join(ROOT, "tests", "make_video_infinity_reference.py")
    subprocess.run([sys.executable, script, "--checkout", checkout, "--out", str(out)], check=True, timeout=PROCESS_TIMEOUT_S * 2)
    check_against_video_infinity(load_file(str(out)))


def test_reference_mode_settings_are_checked():
    with pytest.raises(ValueError, match="per rank.*sync_group_norm off"):
        ClipParallelSettings(8, 2, 4, reference=True).check()
    with pytest.raises(ValueError, match=r"1 <= padding <= frames per clip \(8\), got padding 9"):
        ClipParallelSettings(8, 9, 4, sync_group_norm=False, reference=True).check()
    with pytest.raises(ValueError, match="at least 4 frames per clip"):
        ClipParallelSettings(3, 2, 4, sync_group_norm=False, reference=True).check()
    ClipParallelSettings(8, 8, 0, sync_group_norm=False, reference=True).check()


def sample_payload(model_folder, settings, steps=2, seed=5):
    return {
        "model_path": model_folder, "dtype": "fp32", "settings": {**dataclasses.asdict(settings), "phases": list(settings.phases)},
        "prompts": [[p.positive.numpy(), p.negative.numpy()] for p in PROMPTS], "cfg": 7.5, "size": list(SIZE),
        "steps": steps, "seed": seed, "scheduler": "ddim",
    }


@pytest.mark.parametrize(("ranks", "reference"), [(2, False), (3, False), (3, True)])
def test_gloo_processes_match_the_virtual_ranks(model, model_folder, ranks, reference, monkeypatch):
    # The ranks sum in float32 with as many threads as this process (one under pytest-xdist), so that they add in
    # the same order as the virtual ranks here.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    settings = ClipParallelSettings(frames_per_clip=6, padding=3, global_frames=4, sync_group_norm=not reference, reference=reference)
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
    # Reference mode: Video-Infinity's computation; sync_group_norm does not apply.
    reference = node.sample(**{**arguments, "frames_per_clip": 4, "reference_mode": True})[0]["samples"]
    settings = ClipParallelSettings(4, 2, 3, sync_group_norm=False, reference=True)
    expected = join_clips(sample_virtual(model, [TextGuidance(embeddings(1), embeddings(0), 7.5)], settings, 3, size=SIZE, steps=2, seed=3))
    assert torch.equal(reference, expected) and not torch.equal(reference, latents)
    assert "reference_mode" in node.INPUT_TYPES()["optional"]
    with pytest.raises(NodeInputError, match="padding <= frames per clip"):
        node.sample(**{**arguments, "padding": 5, "reference_mode": True})
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
    # Video-Infinity's configs run in reference mode unless told otherwise.
    assert payload["settings"]["reference"] is True and payload["settings"]["sync_group_norm"] is False
    ours = tool.read_config(video_infinity_config(model_folder, reference_mode=False))[1]["settings"]
    assert ours["reference"] is False and ours["sync_group_norm"] is True
    with pytest.raises(tool.ConfigError, match="sync_group_norm off"):
        tool.read_config(video_infinity_config(model_folder, sync_group_norm=True))
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


def read_to_end(stream, timeout_s: float) -> str:
    """All that is left in a child's pipe, or a test failure when it is still open after `timeout_s` (a process left
    behind holding it) instead of a wait without end."""
    text = []
    reader = threading.Thread(target=lambda: text.append(stream.read()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not text:
        pytest.fail(f"the pipe was still open after {timeout_s} s: a process was left holding it")
    return text[0]


@pytest.mark.parametrize("fault", ["sigterm", "stopped rank"])
def test_the_tool_ends_in_one_line_on_sigterm_and_on_a_stopped_rank(model_folder, tmp_path, fault):
    """tools/distributed_generate.py: SIGTERM stops every rank and exits 143 with one line; a rank stopped with
    SIGSTOP ends the run after the stated timeout ($LONGVIDEO_RANK_TIMEOUT_S), naming the rank, with no traceback."""
    config = video_infinity_config(model_folder)
    config.update({"devices": ["cpu", "cpu"], "base_path": str(tmp_path / "exp"), "dtype": "torch.float32"})
    config["pipe_configs"].update({"steps": 400, "num_frames": 4, "height": 64, "width": 64})
    config["plugin_configs"]["attn"].update({"padding": 2, "top_k": 2})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    child = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "distributed_generate.py"), "--config", str(path)],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "LONGVIDEO_RANK_TIMEOUT_S": "10"})
    family = []
    try:
        for line in child.stderr:
            if line.startswith("step "):  # the ranks are sampling
                break
        family = psutil.Process(child.pid).children(recursive=True)
        if fault == "sigterm":
            child.send_signal(signal.SIGTERM)
        else:
            # The ranks, not multiprocessing's resource tracker (started in the same clock tick, and holding stderr
            # open: stopping it would leave the test waiting for the end of stderr forever).
            ranks = [p for p in family if "spawn_main" in " ".join(p.cmdline())]
            assert len(ranks) == 2, [p.cmdline() for p in family]
            os.kill(ranks[-1].pid, signal.SIGSTOP)
        rest = read_to_end(child.stderr, timeout_s=180)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # SIGKILL ends a stopped process too
    lines = [line for line in rest.splitlines() if not line.startswith("step ")]
    if fault == "sigterm":
        assert code == 128 + signal.SIGTERM and lines == ["distributed_generate: stopped by SIGTERM"], rest[-2000:]
    else:
        assert code == 1 and len(lines) == 1 and "it stopped answering: no heartbeat for 10 s" in lines[0], rest[-2000:]
        assert "worker rank" in lines[0]
