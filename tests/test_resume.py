"""An interrupted continuation resumes to the video the uninterrupted run makes, bit for bit.

Headless: run_workflow.py stopped with SIGTERM in the middle of a chunk keeps <Save prefix>_partial_*.latent with
what resuming needs; the same workflow with LongVideoLoadLatent -> start_latent carries it on (the prompt schedule
from the chunk it stopped at) and saves the same frames as a run that was never stopped. Other settings or another
model are refused by name.
"""

import json
import os
import signal
import time

import av
import numpy as np
import pytest
import torch

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.nodes.common import LATENT_INFO, NodeInputError, partial_prefix
from longvideo.utils.video_io import load_latent_file
from test_reliability import MODEL_NAME, ROOT, RUNNER, output_files, start_python

pytestmark = pytest.mark.usefixtures("tiny_model_folder")

PARTIAL = "LongVideo/continuation_partial_00001.latent"


@pytest.fixture
def models_dir(tiny_model_folder, tmp_path):
    import shutil

    folder = tmp_path / "models"
    shutil.copytree(tiny_model_folder, folder / MODEL_NAME)
    return folder


def workflow(tmp_path, name: str, resume_from: str | None = None, **changes) -> str:
    """The shipped continuation workflow, small: 6 chunks of 4 frames at 32x32, 2 steps, a 6-line prompt schedule,
    lossless video; the report nodes left out. `resume_from` loads that partial into start_latent."""
    api = json.load(open(os.path.join(ROOT, "workflows", "api", "continuation.json")))
    for node_id in [k for k, v in api.items() if v["class_type"] in ("LongVideoReport", "LongVideoColourMatch")]:
        del api[node_id]
    api["2"]["inputs"]["text"] = "\n".join(["a red circle moving right", "a blue square moving down"] * 3)
    api["5"]["inputs"].update({**dict(width=32, height=32, frames_per_chunk=4, chunks=6, min_conditioning_frames=1,
                                      max_conditioning_frames=2, steps=2, method="replace", anchor_colours=True), **changes})
    api["6"]["inputs"].update(crf=0)
    if resume_from is not None:
        api["10"] = {"class_type": "LongVideoLoadLatent", "inputs": {"path": resume_from}}
        api["5"]["inputs"]["start_latent"] = ["10", 0]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(api))
    return str(path)


def run(workflow_path, models_dir, out, *arguments, block_at: int | None = None):
    child = start_python(RUNNER if block_at else "import run_workflow; sys.exit(run_workflow.main(sys.argv[1:]))",
                         workflow_path, "--output-dir", str(out), "--models-dir", str(models_dir), "--threads", "1",
                         *arguments, env={"BLOCK_AT": str(block_at or 0)})
    if block_at:
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            pytest.fail(f"the run did not reach report {block_at}: {child.communicate(timeout=60)[1][-3000:]}")
        child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=300)
    return child.returncode, stdout, stderr


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_a_stopped_continuation_resumes_headless_to_the_same_video_bit_for_bit(tmp_path, models_dir):
    whole, out = tmp_path / "whole", tmp_path / "out"
    code, _, stderr = run(workflow(tmp_path, "whole"), models_dir, whole)
    assert code == 0, stderr[-3000:]
    assert "chunk 1 took" in stderr and "left for the other 5 chunks" in stderr  # the estimate after the first chunk

    # Two steps per chunk: the 7th report is inside chunk 4, so chunks 1 to 3 are finished.
    code, _, stderr = run(workflow(tmp_path, "stopped"), models_dir, out, block_at=7)
    assert code == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    assert output_files(out) == [PARTIAL]  # named after the Save node's prefix
    partial, info = load_latent_file(str(out / PARTIAL))
    facts = info["resume"]
    assert facts["chunks_done"] == 3 and facts["seed"] == 42 and facts["start_frames"] == 0
    assert info["latent_frames"] == partial.shape[2] and len(info["joins"]) == 2

    code, _, stderr = run(workflow(tmp_path, "resumed", resume_from=PARTIAL), models_dir, out)
    assert code == 0, stderr[-3000:]
    assert "carrying on the partial at chunk 4 of 6" in stderr
    (resumed,) = [f for f in output_files(out) if f.endswith(".mp4")]
    (made,) = [f for f in output_files(whole) if f.endswith(".mp4")]
    assert np.array_equal(frames_of(out / resumed), frames_of(whole / made))


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path, models_dir):
    out = tmp_path / "out"
    code, _, stderr = run(workflow(tmp_path, "stopped"), models_dir, out, block_at=5)
    assert code == 128 + signal.SIGTERM
    assert f"--resume {out / PARTIAL}" in stderr  # the log says how to carry on
    # --resume puts a LongVideoLoadLatent of the partial into the sampler's start_latent
    code, _, stderr = run(workflow(tmp_path, "other", seed=7, steps=3), models_dir, out, "--resume", str(out / PARTIAL))
    assert code == 3
    assert "seed 42 (this run: 7)" in stderr and "steps 2 (this run: 3)" in stderr and "resume to false" in stderr
    code, _, stderr = run(workflow(tmp_path, "missing"), models_dir, out, "--resume", str(out / "nothing.latent"))
    assert code == 2 and "LongVideoLoadLatent" in stderr and "was not found" in stderr


# ---------------------------------------------------------------------------------------------------
# in process: the node, its facts and its refusals


def sampler_inputs(loaded, **changes):
    model, clip, _ = loaded
    encode = NODE_CLASS_MAPPINGS["LongVideoTextEncode"]().encode
    inputs = dict(model=model, positive=encode(clip, "a red circle moving right")[0], negative=encode(clip, "")[0],
                  width=32, height=32, frames_per_chunk=4, chunks=4, min_conditioning_frames=1, max_conditioning_frames=2,
                  method="replace", seed=3, steps=2, cfg=5.0, scheduler="ddim", anchor_colours=True)
    inputs.update(changes)
    return inputs


@pytest.fixture
def loaded(tiny_model_folder):
    return NODE_CLASS_MAPPINGS["LongVideoModelLoader"]().load(MODEL_NAME, "auto", str(tiny_model_folder))


def stop_at_chunk(monkeypatch, chunk: int):
    from longvideo.sampling import continuation

    real = continuation.denoise
    calls = []

    def denoise(*args, **kwargs):
        calls.append(1)
        if len(calls) == chunk + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(continuation, "denoise", denoise)
    return lambda: monkeypatch.setattr(continuation, "denoise", real)


def test_resuming_a_clip_started_run_keeps_its_start_and_joins(loaded, monkeypatch, tmp_path):
    sampler = NODE_CLASS_MAPPINGS["LongVideoContinuationSampler"]()
    start = {"samples": torch.randn(1, 4, 3, 4, 4), LATENT_INFO: {"joins": [2], "keyframes": [], "latent_frames": 3}}
    (whole,) = sampler.sample(**sampler_inputs(loaded, start_latent=start))
    restore = stop_at_chunk(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        sampler.sample(**sampler_inputs(loaded, start_latent=start))
    restore()
    (name,) = os.listdir(os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], "LongVideo"))
    assert name.startswith("continuation_partial_")  # no Save node in this graph: the default name
    (partial,) = NODE_CLASS_MAPPINGS["LongVideoLoadLatent"]().load(f"LongVideo/{name}")
    assert partial[LATENT_INFO]["resume"]["chunks_done"] == 2 and partial[LATENT_INFO]["resume"]["start_frames"] == 3
    (resumed,) = sampler.sample(**sampler_inputs(loaded, start_latent=partial))
    assert torch.equal(resumed["samples"], whole["samples"])
    assert resumed[LATENT_INFO] == whole[LATENT_INFO]  # joins of the start clip and of every chunk, carried counts

    (extended,) = sampler.sample(**sampler_inputs(loaded, start_latent=partial, resume=False))
    assert extended["samples"].shape[2] > whole["samples"].shape[2]  # a plain clip: all 4 chunks are added after it

    with pytest.raises(NodeInputError, match="chunks above 2"):
        sampler.sample(**sampler_inputs(loaded, start_latent=partial, chunks=2))
    other = {**partial, LATENT_INFO: {**partial[LATENT_INFO], "resume": {**partial[LATENT_INFO]["resume"], "model": "0" * 16}}}
    with pytest.raises(NodeInputError, match="connect the model it ran with"):
        sampler.sample(**sampler_inputs(loaded, start_latent=other))


def test_the_partial_is_named_after_the_save_node_the_sampler_feeds():
    prompt = {"5": {"class_type": "LongVideoContinuationSampler", "inputs": {}},
              "6": {"class_type": "LongVideoColourMatch", "inputs": {"latent": ["5", 0]}},
              "7": {"class_type": "LongVideoReport", "inputs": {"latent": ["6", 0], "filename_prefix": "runs/report"}},
              "8": {"class_type": "LongVideoSaveVideo", "inputs": {"samples": ["6", 0], "filename_prefix": " runs/sea "}},
              "9": {"class_type": "LongVideoSaveVideo", "inputs": {"filename_prefix": "elsewhere"}}}
    assert partial_prefix(prompt, "5", "LongVideo/continuation_partial") == "runs/sea_partial"
    del prompt["8"]
    assert partial_prefix(prompt, "5", "LongVideo/continuation_partial") == "runs/report_partial"
    assert partial_prefix(prompt, "9", "LongVideo/continuation_partial") == "LongVideo/continuation_partial"
    assert partial_prefix(None, None, "default") == "default"


def test_load_latent_refuses_what_is_not_a_latent(tmp_path):
    loader = NODE_CLASS_MAPPINGS["LongVideoLoadLatent"]
    assert "is empty" in loader.VALIDATE_INPUTS("  ")
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a .latent file" in loader.VALIDATE_INPUTS(str(tmp_path / "notes.txt"))
    (tmp_path / "broken.latent").write_bytes(b"\x00" * 20)
    with pytest.raises(NodeInputError, match="not a readable .latent"):
        loader().load(str(tmp_path / "broken.latent"))


STUCK_RUNNER = """
    import ctypes, os, signal, sys
    from longvideo.sampling import continuation

    real, calls = continuation.denoise, []

    def stuck_in_chunk_4(*args, **kwargs):
        # One model call that never returns to Python: SIGTERM is blocked in this thread (the kernel hands it to
        # another), and the C sleep does not look at Python's signal flags, as a long CUDA or BLAS call does not.
        calls.append(1)
        if len(calls) == 4:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            sleep = ctypes.CDLL(None).sleep
            print("ready", flush=True)
            sleep(600)
        return real(*args, **kwargs)

    continuation.denoise = stuck_in_chunk_4
    import run_workflow
    sys.exit(run_workflow.main(sys.argv[1:]))
"""


def wait_until_asleep_in_c(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the child's main thread is inside the C sleep: a SIGTERM sent while it still runs the few Python
    steps between printing "ready" and the call would be answered by Python, not by the watchdog."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/syscall") as status:
                if status.read().split(" ")[0] in ("35", "230", "101", "115"):  # (clock_)nanosleep, x86-64 and arm64
                    return
        except OSError:  # no /proc or not allowed to read it: a pause makes the race unlikely instead
            time.sleep(1.0)
            return
        time.sleep(0.01)


def test_sigterm_inside_a_model_call_that_does_not_return_keeps_the_finished_chunks(tmp_path, models_dir):
    out = tmp_path / "out"
    child = start_python(STUCK_RUNNER, workflow(tmp_path, "stuck"), "--output-dir", str(out), "--models-dir",
                         str(models_dir), "--threads", "1", env={"LONGVIDEO_STOP_GRACE_S": "2"})
    try:
        assert child.stdout.readline().strip() == "ready", child.communicate(timeout=60)[1][-3000:]
        wait_until_asleep_in_c(child.pid)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM: the run was inside one model call 2 s later and did not wait for it" in stderr
    assert output_files(out) == [PARTIAL] and str(out / PARTIAL) in stderr
    partial, info = load_latent_file(str(out / PARTIAL))
    assert info["resume"]["chunks_done"] == 3 and partial.shape[2] == info["latent_frames"]


def test_the_model_fingerprint_tells_weights_apart(loaded, tiny_model_folder):
    from longvideo.nodes.common import model_fingerprint

    model = loaded[0]
    again = NODE_CLASS_MAPPINGS["LongVideoModelLoader"]().load(MODEL_NAME, "auto", str(tiny_model_folder))[0]
    assert model_fingerprint(model) == model_fingerprint(again)
    first = sorted(again.unet.state_dict())[0]
    with torch.no_grad():
        again.unet.state_dict()[first].add_(1.0)
    assert model_fingerprint(model) != model_fingerprint(again)
