"""Nothing is lost or overwritten when runs overlap, are stopped by a signal, or are given bad values.

Real processes: two savers racing for the same name, run_workflow.py stopped with SIGTERM (and SIGKILL) in the
middle of sampling and of saving.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.nodes.common import NodeInputError, PartialSaveError, save_partial_latent
from longvideo.nodes.video import LongVideoSaveVideo
from longvideo.utils import video_io
from longvideo.utils.video_io import VideoOutputError, reserve_output_path, resolve_output_path, write_video
from longvideo.utils.workflow import WorkflowError, load_workflow, validate_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_NAME = "longvideo-shapes"


def output_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def start_python(code: str, *args, env=None, cwd=None) -> subprocess.Popen:
    """A child Python running `code` with the pack importable as `longvideo` (and this repository on sys.path)."""
    prelude = f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n" \
              "from pack_import import import_pack; import_pack()\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


# ---------------------------------------------------------------------------------------------------
# 1. concurrent saves


SAVER = """
    import os, sys, time
    import torch
    from longvideo.nodes.common import save_partial_latent
    from longvideo.nodes.video import LongVideoSaveVideo

    me, other, colour = sys.argv[1], sys.argv[2], float(sys.argv[3])
    barrier = os.environ["BARRIER"]

    def meet(name):
        # Both processes are inside the same step before either goes on: no timing involved.
        open(os.path.join(barrier, f"{name}-{me}"), "w").close()
        while not os.path.exists(os.path.join(barrier, f"{name}-{other}")):
            time.sleep(0.01)

    class Vae:  # decodes to solid frames of this process's colour, meeting the other process after the first batch
        latent_channels = 4
        downscale = 8

        def decode_batches(self, latents, frames_per_batch):
            for start in range(0, latents.shape[2], frames_per_batch):
                yield torch.full((frames_per_batch, 32, 32, 3), colour)
                if start == 0:
                    meet("encoding")

    LongVideoSaveVideo().save("race/clip", 8.0, "mp4", 19, samples={"samples": torch.zeros(1, 4, 6, 4, 4)}, vae=Vae(),
                              frames_per_batch=2)
    meet("saved")
    save_partial_latent(torch.full((1, 4, 3, 4, 4), colour), "race/partial")
"""


def test_two_processes_saving_with_the_same_prefix_get_different_files(tmp_path):
    out, barrier = tmp_path / "output", tmp_path / "barrier"
    barrier.mkdir()
    env = {"LONGVIDEO_OUTPUT_DIR": str(out), "BARRIER": str(barrier)}
    colours = {"a": 0.2, "b": 0.8}
    savers = [start_python(SAVER, me, other, str(colours[me]), env=env) for me, other in (("a", "b"), ("b", "a"))]
    for saver in savers:
        _, stderr = saver.communicate(timeout=300)
        assert saver.returncode == 0, stderr
    assert output_files(out) == ["race/clip_00001.mp4", "race/clip_00002.mp4",
                                 "race/partial_00001.latent", "race/partial_00002.latent"]
    seen = []
    for name in ("clip_00001.mp4", "clip_00002.mp4"):
        with av.open(str(out / "race" / name)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert len(frames) == 6
        seen.append(round(float(frames.mean()) / 255, 1))  # one process's colour, whole: nothing interleaved
        assert np.ptp(frames.astype(np.int32)) <= 4
    assert sorted(seen) == [0.2, 0.8]
    kept = sorted(float(load_file(str(out / "race" / f"partial_0000{i}.latent"))["latent_tensor"].mean()) for i in (1, 2))
    assert kept == pytest.approx([0.2, 0.8])


def test_a_held_name_is_skipped_and_a_killed_writers_leftover_is_not_counted(tmp_path):
    out = str(tmp_path)
    first = reserve_output_path(out, "clip", "mp4")
    second = reserve_output_path(out, "clip", "mp4")
    assert (first.filename, second.filename) == ("clip_00001.mp4", "clip_00002.mp4")
    # A killed writer leaves its hidden partial file but no lock: the next writer removes it and reuses the number.
    holder = start_python("""
        import os, signal, sys
        from longvideo.utils.video_io import reserve_output_path
        held = reserve_output_path(sys.argv[1], "clip", "mp4")
        print(held.filename, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """, out)
    assert holder.stdout.readline().strip() == "clip_00003.mp4"
    holder.wait(timeout=60)
    assert os.path.exists(os.path.join(out, ".clip_00003.mp4.partial"))
    third = reserve_output_path(out, "clip", "mp4")  # the leftover is removed and its number taken again
    assert third.filename == "clip_00003.mp4"
    for reservation in (first, second, third):
        reservation.discard()
    writer = start_python("""
        import os, signal, sys
        import numpy as np
        from longvideo.utils.video_io import VideoWriter, reserve_output_path
        with VideoWriter(reserve_output_path(sys.argv[1], "clip", "mp4"), 8) as video:
            video.write(np.zeros((3, 16, 16, 3), np.uint8))
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: what a power cut or OOM kill leaves
    """, out)
    writer.wait(timeout=60)
    assert os.listdir(out) == [".clip_00001.mp4.partial"]
    assert resolve_output_path(out, "clip", "mp4")[2] == "clip_00001.mp4"  # does not push numbers up
    assert os.listdir(out) == []


def test_a_second_writer_of_the_same_explicit_path_is_refused(tmp_path):
    path = str(tmp_path / "clip.mp4")
    with video_io.VideoWriter(path, 8) as writer:
        writer.write(np.zeros((1, 16, 16, 3), np.uint8))
        with pytest.raises(VideoOutputError, match="being written by another writer"):
            with video_io.VideoWriter(path, 8):
                pass
    assert os.listdir(tmp_path) == ["clip.mp4"]


# ---------------------------------------------------------------------------------------------------
# 2. SIGTERM (and SIGKILL) while running headless


RUNNER = """
    import os, sys, time
    from longvideo.utils import comfy

    block_at, updates = int(os.environ["BLOCK_AT"]), []
    update = comfy.Progress.update

    def blocking_update(self, count=1):
        # Progress is where the samplers and the writer report each step or batch: stop there, after the
        # BLOCK_AT-th report, and wait for the test's signal.
        update(self, count)
        updates.append(count)
        if len(updates) == block_at:
            print("ready", flush=True)
            time.sleep(600)

    comfy.Progress.update = blocking_update
    import run_workflow
    sys.exit(run_workflow.main(sys.argv[1:]))
"""


@pytest.fixture
def models_dir(tiny_model_folder, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_folder, folder / MODEL_NAME)
    return folder


def continuation_workflow(tmp_path) -> str:
    api = json.load(open(os.path.join(ROOT, "workflows", "api", "continuation.json")))
    sampler = api["5"]["inputs"]
    sampler.update(width=32, height=32, frames_per_chunk=4, chunks=20, min_conditioning_frames=1, max_conditioning_frames=1,
                   steps=2, method="replace")  # the tiny random model takes no known frames
    path = tmp_path / "continuation.json"
    path.write_text(json.dumps(api))
    return str(path)


def text_to_video_workflow(tmp_path) -> str:
    api = json.load(open(os.path.join(ROOT, "workflows", "api", "text_to_video.json")))
    api["4"]["inputs"].update(width=32, height=32, frames=12)
    api["5"]["inputs"]["steps"] = 2
    api["6"]["inputs"]["frames_per_batch"] = 4
    path = tmp_path / "text_to_video.json"
    path.write_text(json.dumps(api))
    return str(path)


def run_until_blocked(workflow, models_dir, out, block_at):
    child = start_python(RUNNER, workflow, "--output-dir", str(out), "--models-dir", str(models_dir),
                         env={"BLOCK_AT": str(block_at)})
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        pytest.fail(f"the run did not reach report {block_at}: {child.communicate()[1][-3000:]}")
    return child


def test_sigterm_during_continuation_keeps_the_finished_chunks(tmp_path, models_dir):
    out = tmp_path / "out"
    # Two steps per chunk: after the 5th report chunk 3 has begun, chunks 1 and 2 (4 + 3 frames) are finished.
    child = run_until_blocked(continuation_workflow(tmp_path), models_dir, out, block_at=5)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert output_files(out) == ["LongVideo/continuation_partial_00001.latent"]
    kept = load_file(str(out / "LongVideo" / "continuation_partial_00001.latent"))
    assert kept["latent_tensor"].shape == (1, 4, 7, 4, 4)
    assert torch.isfinite(kept["latent_tensor"]).all()


def test_sigterm_during_saving_removes_the_partial_video_and_keeps_the_latents(tmp_path, models_dir):
    out = tmp_path / "out"
    child = run_until_blocked(text_to_video_workflow(tmp_path), models_dir, out, block_at=3)  # 2 steps, 1 batch written
    assert ".text_to_video_00001.mp4.partial" in os.listdir(out / "LongVideo")
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert output_files(out) == ["LongVideo/unsaved_00001.latent"]
    assert load_file(str(out / "LongVideo" / "unsaved_00001.latent"))["latent_tensor"].shape == (1, 4, 12, 4, 4)


# ---------------------------------------------------------------------------------------------------
# 3. everything a run needs is checked before its first step; a failed save keeps the latents


@pytest.mark.parametrize("change, message", [
    ({"format": "gif", "fps": 120.0}, "fps 120.0 is out of range for gif.*at most 100"),
    ({"filename_prefix": "../escape"}, "contains '..'"),
    ({"filename_prefix": "/etc/video"}, "absolute path"),
    ({"filename_prefix": "x" * 300}, "bytes long"),
    ({"fps": float("nan")}, "'fps': nan is not a finite number"),
])
def test_save_settings_are_refused_before_anything_runs(change, message, tmp_path):
    api = load_workflow(os.path.join(ROOT, "workflows", "api", "text_to_video.json"), NODE_CLASS_MAPPINGS)
    api["6"]["inputs"].update(change)
    with pytest.raises(WorkflowError, match=message):
        validate_workflow(api, NODE_CLASS_MAPPINGS)  # what run_workflow does before running any node
    assert LongVideoSaveVideo.VALIDATE_INPUTS(**{k: api["6"]["inputs"][k] for k in ("filename_prefix", "fps", "format")}) \
        is not True  # what ComfyUI calls before running any node


def test_a_failing_encoder_keeps_the_latents(monkeypatch, tmp_path):
    class Vae:
        latent_channels, downscale = 4, 8

        def decode_batches(self, latents, frames_per_batch):
            yield torch.rand(latents.shape[2], 16, 16, 3)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io.av, "open", broken)
    latents = torch.randn(1, 4, 5, 2, 2)
    with pytest.raises(OSError, match="No space left") as raised:
        LongVideoSaveVideo().save("v", 8.0, "mp4", 19, samples={"samples": latents}, vae=Vae())
    out = os.environ["LONGVIDEO_OUTPUT_DIR"]
    assert output_files(out) == ["LongVideo/unsaved_00001.latent"]
    assert any("LongVideo/unsaved_00001.latent" in note for note in raised.value.__notes__)
    assert torch.equal(load_file(os.path.join(out, "LongVideo", "unsaved_00001.latent"))["latent_tensor"], latents)


def test_distributed_generate_checks_its_output_before_sampling(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import distributed_generate

    base = {"model_path": str(tmp_path), "devices": ["cpu"], "base_path": str(tmp_path / "out"),
            "video_infinity": {"padding": 2, "top_k": 2},
            "pipe_configs": {"prompts": ["a"], "num_frames": 8, "height": 32, "width": 32, "steps": 2}}
    for pipe, message in [({"export_fps": 2000}, "export_fps"), ({"export_fps": float("nan")}, "export_fps"),
                          ({"file_name": "../x"}, "file_name"), ({"file_name": "y" * 300}, "file_name"),
                          ({"steps": 0}, "steps"), ({"guidance_scale": float("inf")}, "guidance_scale"),
                          ({"num_frames": -1}, "num_frames"), ({"height": 0}, "height")]:
        config = json.loads(json.dumps(base))
        config["pipe_configs"].update(pipe)
        with pytest.raises(distributed_generate.ConfigError, match=message):
            distributed_generate.read_config(config)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# 4 and 7. bad values in the nodes name the input


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nodes_refuse_nan_and_infinity(value):
    from longvideo.nodes.upscale import LongVideoLatentUpscale

    with pytest.raises(NodeInputError, match=f"LongVideoSaveVideo: 'fps' is {value}"):
        LongVideoSaveVideo().save("v", value, "mp4", 19, images=torch.rand(2, 16, 16, 3))
    with pytest.raises(NodeInputError, match=f"LongVideoLatentUpscale: 'scale_by' is {value}"):
        LongVideoLatentUpscale().upscale({"samples": torch.zeros(1, 4, 2, 4, 4)}, "bilinear", value, 0, 0, 16)


def test_sampler_refuses_nan_cfg_and_guidance_weight(tiny_model_folder):
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.loaders import LongVideoModelLoader
    from longvideo.nodes.sampler import LongVideoSampler
    from longvideo.nodes.conditioning import LongVideoTextEncode

    model, clip, _ = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)
    text = LongVideoTextEncode().encode(clip, "x")[0]
    with pytest.raises(NodeInputError, match="LongVideoSampler: 'cfg' is nan"):
        LongVideoSampler().sample(model, text, text, {"samples": torch.zeros(1, 4, 2, 4, 4)}, 0, 2, float("nan"), "ddim")
    with pytest.raises(NodeInputError, match="'guidance_weight' is nan"):
        LongVideoContinuationSampler().sample(model, text, text, 32, 32, 4, 2, 1, 1, "guidance", 0, 2, 7.5, "ddim",
                                              guidance_weight=float("nan"))


def test_bad_sizes_and_batches_name_the_input(tiny_model_folder, monkeypatch):
    from longvideo.nodes import latents as latent_nodes
    from longvideo.nodes.continuation import LongVideoContinuationSampler
    from longvideo.nodes.loaders import LongVideoModelLoader
    from longvideo.nodes.conditioning import LongVideoTextEncode

    with pytest.raises(NodeInputError, match="LongVideoEmptyLatent: .*GiB but only .*lower frames"):
        latent_nodes.LongVideoEmptyLatent().generate(4096, 4096, 100000, 64)
    model, clip, vae = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)
    latent = {"samples": torch.zeros(1, 4, 2, 4, 4)}
    for frames_per_batch in (0, -3):
        with pytest.raises(NodeInputError, match=f"LongVideoDecode: frames_per_batch is {frames_per_batch}"):
            latent_nodes.LongVideoDecode().decode(vae, latent, frames_per_batch)
        with pytest.raises(NodeInputError, match=f"frames_per_batch is {frames_per_batch}"):
            LongVideoSaveVideo().save("v", 8.0, "mp4", 19, samples=latent, vae=vae, frames_per_batch=frames_per_batch)
    with pytest.raises(NodeInputError, match="LongVideoEncode: 'pixels' holds 0 frames"):
        latent_nodes.LongVideoEncode().encode(vae, torch.zeros(0, 32, 32, 3), 4)
    text = LongVideoTextEncode().encode(clip, "x")[0]
    with pytest.raises(NodeInputError, match="start_image must be an IMAGE with at least one frame"):
        LongVideoContinuationSampler().sample(model, text, text, 32, 32, 4, 2, 1, 1, "replace", 0, 2, 7.5, "ddim",
                                              start_image=torch.zeros(0, 32, 32, 3), vae=vae)


def test_prefix_rules(tmp_path):
    out = str(tmp_path)
    path, _, name = resolve_output_path(out, "a:b", "mp4")  # an ordinary name on Linux and macOS
    assert name == "a:b_00001.mp4" and os.path.dirname(path) == os.path.realpath(out)
    with pytest.raises(VideoOutputError, match="bytes long"):
        resolve_output_path(out, "v" * 300, "mp4")
    longest = "w" * (video_io.NAME_MAX_BYTES - video_io._COUNTER_ROOM - 3)
    with reserve_output_path(out, longest, "mp4") as reservation:  # the hidden partial name fits too
        assert os.path.exists(reservation.partial_path)
    open(os.path.join(out, "file"), "w").close()
    with pytest.raises(VideoOutputError, match="is a file, not a folder"):
        resolve_output_path(out, "file/clip", "mp4")


def test_model_config_that_is_not_an_object_is_named(tiny_model_folder, tmp_path):
    from longvideo.models.loader import ModelLoadError, load_text_to_video

    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_folder, folder)
    (folder / "unet" / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelLoadError, match=r"unet/config.json is not valid JSON \(it holds a JSON list, not an object\)"):
        load_text_to_video(str(folder))


def test_set_keeps_text_inputs_as_text():
    import run_workflow

    api = load_workflow(os.path.join(ROOT, "workflows", "api", "distributed.json"), NODE_CLASS_MAPPINGS)
    sampler = next(k for k, node in api.items() if node["class_type"] == "LongVideoDistributedSampler")
    run_workflow.apply_override(api, NODE_CLASS_MAPPINGS, f"{sampler}.devices=0", "w.json", WorkflowError)
    run_workflow.apply_override(api, NODE_CLASS_MAPPINGS, f"{sampler}.virtual_ranks=3", "w.json", WorkflowError)
    assert api[sampler]["inputs"]["devices"] == "0" and api[sampler]["inputs"]["virtual_ranks"] == 3
    del api[sampler]["inputs"]  # a node without inputs gets them
    run_workflow.apply_override(api, NODE_CLASS_MAPPINGS, f"{sampler}.seed=5", "w.json", WorkflowError)
    assert api[sampler]["inputs"] == {"seed": 5}
    api[sampler]["inputs"] = [1, 2]
    with pytest.raises(WorkflowError, match=f"node {sampler} has 'inputs' of type list"):
        run_workflow.apply_override(api, NODE_CLASS_MAPPINGS, f"{sampler}.seed=5", "w.json", WorkflowError)


@pytest.mark.parametrize("content, message", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (json.dumps({"1": {"class_type": ["LongVideoSaveVideo"], "inputs": {}},
                 "2": {"class_type": "LongVideoSaveVideo", "inputs": {"filename_prefix": "v", "fps": 8.0, "format": "mp4", "crf": 19}}}),
     "'class_type' is \\['LongVideoSaveVideo'\\]"),
    (json.dumps({"nodes": [{"type": "LongVideoSaveVideo"}], "links": []}), "has no valid 'id'"),
    (json.dumps({"nodes": [{"id": 1, "type": "LongVideoSaveVideo"}], "links": [[1, 2, 0]]}), "each link needs"),
], ids=["200000-deep", "class_type-list", "ui-node-without-id", "short-link"])
def test_run_workflow_prints_one_clean_error_line(content, message, tmp_path, capsys):
    import re

    import run_workflow

    path = tmp_path / "bad.json"
    path.write_text(content)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert run_workflow.main([str(path), "--output-dir", str(tmp_path / "out")]) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and re.search(message, err), err


# ---------------------------------------------------------------------------------------------------
# 7. disk full while saving a partial latent; 8. bounded metadata, alike file modes


def test_disk_full_while_saving_a_partial_latent_names_the_file_and_the_loss(monkeypatch):
    real_write = os.write

    def full(handle, data):
        if len(data) > 100:
            raise OSError(28, "No space left on device")
        return real_write(handle, data)

    monkeypatch.setattr(video_io.os, "write", full)
    with pytest.raises(PartialSaveError, match=r"could not save the 9 finished frames to .*LongVideo/partial_00001\.latent "
                                               r"\(No space left on device\); they are lost"):
        save_partial_latent(torch.zeros(1, 4, 9, 8, 8), "LongVideo/partial")
    assert output_files(os.environ["LONGVIDEO_OUTPUT_DIR"]) == []


def test_metadata_is_capped(tmp_path, caplog):
    path = str(tmp_path / "v.mp4")
    huge = "x" * (video_io.MAX_METADATA_BYTES + 1)
    write_video([np.zeros((2, 16, 16, 3), np.uint8)], path, 8, metadata={"prompt": huge, "comment": "kept"})
    with av.open(path) as container:
        assert container.metadata.get("comment") == "kept" and "prompt" not in container.metadata
    assert os.path.getsize(path) < 100_000
    assert "'prompt'" in caplog.text and "written without it" in caplog.text


def test_videos_and_latents_get_the_same_file_mode():
    video = LongVideoSaveVideo().save("same/v", 8.0, "mp4", 19, images=torch.rand(2, 16, 16, 3))["ui"]["images"][0]
    out = os.environ["LONGVIDEO_OUTPUT_DIR"]
    latent = save_partial_latent(torch.zeros(1, 4, 2, 2, 2), "same/l")
    umask = os.umask(0)
    os.umask(umask)
    modes = {os.stat(os.path.join(out, "same", video["filename"])).st_mode & 0o777, os.stat(latent).st_mode & 0o777}
    assert modes == {0o666 & ~umask}


def test_a_node_failing_at_run_time_is_one_line_and_status_3(tmp_path, capsys):
    """Headless, a node's error is its node and message (rc 3); --verbose adds the traceback."""
    import run_workflow

    path = tmp_path / "latent.json"
    (tmp_path / "broken.latent").write_bytes(b"\x00" * 16)  # found by the graph check, unreadable when the node runs
    path.write_text(json.dumps({
        "1": {"class_type": "LongVideoLoadLatent", "inputs": {"path": str(tmp_path / "broken.latent")}},
        "2": {"class_type": "LongVideoSaveVideo", "inputs": {"filename_prefix": "v", "fps": 8.0, "format": "mp4", "crf": 19,
                                                            "samples": ["1", 0]}}}))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        run = [str(path), "--output-dir", str(tmp_path / "out"), "--threads", "1"]
        assert run_workflow.main(run) == 3
        quiet = capsys.readouterr().err.strip().splitlines()
        assert run_workflow.main(run + ["--verbose"]) == 3
        verbose = capsys.readouterr().err
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert quiet[-2:][1] == "(run with --verbose for the traceback)", quiet
    assert quiet[-2].startswith(f"error in node 1 (LongVideoLoadLatent): LongVideoLoadLatent: {tmp_path / 'broken.latent'} "
                                "is not a readable .latent file"), quiet
    assert "Traceback" in verbose and "Traceback" not in "\n".join(quiet)


@pytest.mark.parametrize("prefix", ["LongVideo/run\nevil", "LongVideo/cod\u202egpj.mp4", "LongVideo/tab\there"])
def test_control_and_direction_characters_are_refused_in_prefixes(prefix, tmp_path):
    from longvideo.utils.video_io import VideoOutputError, check_output_prefix

    with pytest.raises(VideoOutputError, match="contains control or text-direction characters \\(U\\+"):
        check_output_prefix(str(tmp_path), prefix, "mp4")


def test_nothing_finished_writes_no_empty_latent(tmp_path):
    from longvideo.nodes.common import NodeInputError, save_partial_latent
    from longvideo.nodes.video import LongVideoSaveVideo

    assert save_partial_latent(torch.zeros(1, 4, 0, 2, 2), "LongVideo/empty") is None
    with pytest.raises(NodeInputError, match="'samples' holds no frames"):
        LongVideoSaveVideo().save("LongVideo/empty", 8.0, "mp4", 19, samples={"samples": torch.zeros(1, 4, 0, 2, 2)},
                                  vae=_FourChannelVae())
    output = os.environ["LONGVIDEO_OUTPUT_DIR"]
    assert not os.path.exists(output) or not [f for _, _, files in os.walk(output) for f in files]


class _FourChannelVae:
    latent_channels = 4
    downscale = 8


def test_nan_and_absurd_values_are_refused_where_they_enter_naming_the_frames():
    from longvideo.nodes.common import NodeInputError, video_latents
    from longvideo.nodes.interpolation import LongVideoFlowInterpolate
    from longvideo.nodes.latents import LongVideoEncode
    from longvideo.nodes.video import LongVideoSaveVideo

    latents = torch.zeros(1, 4, 6, 2, 2)
    latents[:, :, 2] = float("nan")
    latents[0, 1, 4, 0, 0] = 1e30
    with pytest.raises(NodeInputError, match=r"LongVideoContinuationSampler: 'start_latent' holds NaN, infinite or "
                                             r"out-of-range values \(beyond 10000\) in frames 2, 4 of 6"):
        video_latents({"samples": latents}, "LongVideoContinuationSampler", "start_latent")
    images = torch.rand(3, 8, 8, 3)
    images[1, 0, 0, 0] = float("inf")
    with pytest.raises(NodeInputError, match="LongVideoSaveVideo: 'images' holds NaN.* in frame 1 of 3"):
        LongVideoSaveVideo().save("LongVideo/nan", 8.0, "mp4", 19, images=images)
    with pytest.raises(NodeInputError, match="LongVideoFlowInterpolate: 'images' holds NaN.* in frame 1 of 3"):
        LongVideoFlowInterpolate().interpolate(images, 2, "dis")
    with pytest.raises(NodeInputError, match="LongVideoEncode: 'pixels' holds NaN.* in frame 1 of 3"):
        LongVideoEncode().encode(_FourChannelVae(), images, 4)
