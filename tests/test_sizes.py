"""Sizes that cannot fit are refused before anything is allocated, naming the figure and the input to change; a prompt
schedule encodes its lines as the chunks reach them."""

import collections

import psutil
import pytest
import torch

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.models.denoiser import call_bytes
from longvideo.nodes.common import MadeOnDemand, NodeInputError
from longvideo.sampling.context_windows import WindowedDenoiser
from test_resume import loaded, sampler_inputs  # noqa: F401 (fixtures)

GIB = 2**30


@pytest.fixture
def free_memory(monkeypatch):
    """The machine has this much memory free, whatever it really has."""

    def set_free(gib: float):
        memory = collections.namedtuple("memory", "available total")(int(gib * GIB), int(gib * GIB))
        monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)

    return set_free


def no_model_call(monkeypatch):
    from longvideo.sampling import denoise

    def refused(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(denoise, "denoise", refused)


def test_the_plain_sampler_refuses_a_call_that_cannot_fit(loaded, free_memory, monkeypatch):
    free = call_bytes(loaded[0], 1, 100000, 8, 8) / 2 / GIB
    free_memory(free)
    no_model_call(monkeypatch)
    (latent,) = NODE_CLASS_MAPPINGS["LongVideoEmptyLatent"]().generate(64, 64, 100000, 1)
    inputs = sampler_inputs(loaded)
    sampler = NODE_CLASS_MAPPINGS["LongVideoSampler"]()
    with pytest.raises(NodeInputError, match=r"one model call on 100000 frames of 64x64 needs at least \d+\.\d GiB but "
                                             rf"only this much memory is free: {free:.1f} GiB: lower frames"):
        sampler.sample(inputs["model"], inputs["positive"], inputs["negative"], latent, 0, 2, 5.0, "ddim")
    with pytest.raises(NodeInputError, match="one model call on 16 frames of 4096x4096"):
        sampler.sample(inputs["model"], inputs["positive"], inputs["negative"], {"samples": torch.zeros(1, 4, 16, 512, 512)},
                       0, 2, 5.0, "ddim")


def test_windows_bound_the_frames_of_a_call(loaded):
    model = loaded[0]
    whole = call_bytes(model, 1, 100000, 8, 8)
    assert call_bytes(WindowedDenoiser(model, 16, 4), 1, 100000, 8, 8) == call_bytes(model, 1, 16, 8, 8) < whole / 1000


def test_continuation_refuses_latents_that_cannot_be_kept(loaded, free_memory, monkeypatch):
    free_memory(4)
    no_model_call(monkeypatch)
    sampler = NODE_CLASS_MAPPINGS["LongVideoContinuationSampler"]()
    with pytest.raises(NodeInputError, match=r"latent frames of 64x64 need \d+\.\d GiB while sampling but only 4\.0 GiB of "
                                             r"memory is free: lower chunks"):
        sampler.sample(**sampler_inputs(loaded, width=64, height=64, frames_per_chunk=1024, chunks=10000))


def test_co_denoise_refuses_a_window_that_cannot_fit(loaded, free_memory, monkeypatch):
    free_memory(call_bytes(loaded[0], 1, 1024, 32, 32) / 2 / GIB)
    no_model_call(monkeypatch)
    sampler = NODE_CLASS_MAPPINGS["LongVideoCoDenoiseSampler"]()
    inputs = {k: v for k, v in sampler_inputs(loaded).items() if k in ("model", "positive", "negative")}
    with pytest.raises(NodeInputError, match="one model call on 1024 frames of 256x256 .*lower frames, frames_per_window"):
        sampler.sample(**inputs, width=256, height=256, frames=2048, frames_per_window=1024, overlap=256,
                       noise="freenoise", seed=0, steps=2, cfg=5.0, scheduler="ddim")


def test_a_prompt_schedule_encodes_only_the_lines_the_chunks_reach(loaded, monkeypatch):
    model, clip, _ = loaded
    inputs = sampler_inputs(loaded, chunks=3)
    encoded = []
    encode = clip.encode

    def counting(lines):
        encoded.extend(lines)
        return encode(lines)

    monkeypatch.setattr(clip, "encode", counting)
    text = "\n".join(f"a red circle moving right {i}" for i in range(10000))
    (schedule,) = NODE_CLASS_MAPPINGS["LongVideoPromptSchedule"]().encode(clip, text)
    assert len(schedule) == 10000 and encoded == []
    sampler = NODE_CLASS_MAPPINGS["LongVideoContinuationSampler"]()
    sampler.sample(**inputs, prompt_schedule=schedule)
    assert encoded == [f"a red circle moving right {i}" for i in range(3)]
    # a line encoded alone is the line of a batch (the schedule is the same whichever lines were asked for before)
    tokens, _ = encode(["a red circle moving right 1", "a red circle moving right 2"])
    assert torch.allclose(schedule[2][0][0], tokens[1:2], atol=1e-5)


def test_made_on_demand_keeps_a_few():
    made = []
    items = MadeOnDemand(100, lambda i: made.append(i) or i * i, keep=2)
    assert [items[1], items[1], items[2], items[-1], items[1]] == [1, 1, 4, 9801, 1]
    assert made == [1, 2, 99, 1] and items[2:5] == [4, 9, 16]
    with pytest.raises(IndexError):
        items[100]


# ---------------------------------------------------------------------------------------------------
# what the graph alone says is checked before any node runs (ComfyUI's VALIDATE_INPUTS, run_workflow.py's validation)


@pytest.mark.parametrize("workflow, settings, message", [
    ("continuation", ["5.width=70"], "LongVideoContinuationSampler: width 70 is not a multiple of 8: use 64 or 72"),
    ("continuation", ["5.max_conditioning_frames=16"], "frames_per_chunk .16. must exceed max_conditioning_frames .16."),
    ("continuation", ["5.min_conditioning_frames=5"], "min_conditioning_frames .5. is above max_conditioning_frames .4."),
    ("continuation", ["5.width=100000"], "'width' is 100000: give a value from"),
    ("co_denoise", ["5.overlap=16"], "LongVideoCoDenoiseSampler: overlap 16 must be at least 0 and below frames_per_window"),
    ("upscale", ["5.overlap=20"], "LongVideoContextWindows: overlap 20 must be at least 0 and below frames_per_window"),
    ("upscale", ["8.steps=1"], "LongVideoSampler: 1 steps at denoise 0.5 run no step"),
    ("text_to_video", ["4.height=36"], "LongVideoEmptyLatent: height 36 is not a multiple of 8"),
    ("hierarchical", ["4.width=60"], "LongVideoHierarchicalSampler: width 60 is not a multiple of 8"),
])
def test_graph_checks_refuse_before_any_node_runs(workflow, settings, message, tmp_path, capsys):
    import os
    import re

    import run_workflow

    from test_reliability import ROOT

    arguments = [os.path.join(ROOT, "workflows", "api", f"{workflow}.json"), "--output-dir", str(tmp_path)]
    for setting in settings:
        arguments += ["--set", setting]
    assert run_workflow.main(arguments) == 2
    err = capsys.readouterr().err
    assert "..." not in err and re.search(message, err), err  # no node started ("[1] ... ...")
    assert len(err.strip().splitlines()) == 1, err
