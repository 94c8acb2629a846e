import math
import os

import pytest
import torch
from safetensors.torch import load_file

from longvideo.models.infinet import InfiNet, save_infinet
from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.continuation import LongVideoPromptSchedule
from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler, LongVideoInfiNetLoader
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling import hierarchy
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.sampling.frame_conditioning import ReplaceConditioning
from longvideo.sampling.hierarchy import HierarchyPlan, KnownFrames, level_prompts, timeline_prompts


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


def schedule(tiny, text="a red circle moving right"):
    return LongVideoPromptSchedule().encode(tiny[1], text)[0]


def sample(tiny, keyframes=4, depth=2, batch_cap=8, seed=1, steps=2, method="replace", scheduler="ddim", cfg=7.5,
           text="a red circle moving right", layout="timeline", **optional):
    model, clip, _ = tiny
    return LongVideoHierarchicalSampler().sample(
        model, schedule(tiny, text), LongVideoTextEncode().encode(clip, "")[0], layout, 32, 32, keyframes, depth, method, seed,
        steps, cfg, scheduler, batch_cap, **optional,
    )[0]["samples"]


# --- the plan -------------------------------------------------------------------------------------------------------


def test_frame_and_segment_counts():
    assert [HierarchyPlan(16, m).frames for m in (1, 2, 3)] == [16, 226, 3376]
    plan = HierarchyPlan(16, 3)
    assert [plan.segments(level) for level in range(3)] == [1, 15, 225]
    assert HierarchyPlan(6, 5).frames == 3126
    assert plan.runs(batch_cap=8) == 1 + 2 + 29 and plan.runs(batch_cap=10**6) == 3
    # The runs of a level tile the video: consecutive runs share exactly one endpoint, and together they hold every
    # frame of the level.
    for level in range(3):
        runs = [plan.segment_frames(level, s) for s in range(plan.segments(level))]
        assert all(a[-1] == b[0] for a, b in zip(runs, runs[1:]))
        assert sorted({f for run in runs for f in run}) == plan.level_frames(level)
    assert plan.level_frames(0) == list(range(0, 3376, 225)) and plan.level_frames(2) == list(range(3376))


def test_prompt_layouts():
    plan = HierarchyPlan(4, 3)  # 28 frames; runs of level 1 cover 0-9, 9-18, 18-27
    assert timeline_prompts(plan, ["a", "b", "c"])[:2] == [["b"], ["a", "b", "c"]]
    assert timeline_prompts(plan, ["a", "b", "c"])[2] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert timeline_prompts(plan, ["only"]) == [["only"], ["only"] * 3, ["only"] * 9]
    assert level_prompts(plan, ["global", "middle"]) == [["global"], ["middle"], ["middle"]]
    assert hierarchy.spread(["x", "y"], 5) == ["x", "x", "x", "y", "y"]


# --- the loop's per-item seeds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["ddim", "euler_ancestral", "ddpm"])
def test_one_seed_in_a_list_draws_what_the_seed_draws(tiny, scheduler):
    model, clip, _ = tiny
    positive, _ = clip.encode(["a red circle"])
    guidance = TextGuidance(positive, clip.encode([""])[0], 7.5)
    one = denoise(model, guidance, (1, 4, 5, 4, 4), steps=3, seed=11, scheduler=scheduler)
    assert torch.equal(one, denoise(model, guidance, (1, 4, 5, 4, 4), steps=3, seed=[11], scheduler=scheduler))


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m", "euler_ancestral", "ddpm"])
def test_a_segment_alone_equals_the_same_segment_in_a_batch(tiny, scheduler):
    """Per-item generators (initial and ancestral step noise), per-item prompts and endpoints: item 1 of a batch of 3
    comes out as it does alone."""
    model, clip, _ = tiny
    prompts, _ = clip.encode(["a red circle", "a blue square", "a green line"])
    negative, _ = clip.encode([""])
    endpoints = torch.randn(3, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    seeds = [5, 6, 7]

    def run(items):
        known = KnownFrames([0, 5], endpoints[items])
        return denoise(model, TextGuidance(prompts[items], negative, 7.5), (len(items), 4, 6, 4, 4), steps=3,
                       seed=[seeds[i] for i in items], scheduler=scheduler, conditioning=ReplaceConditioning(known))

    batched = run([0, 1, 2])
    alone = run([1])
    # Not bit-exact: batched kernels round differently (~1e-5); a wrong seed, prompt or endpoint would differ by ~1.
    assert torch.allclose(alone[0], batched[1], atol=1e-4)
    assert torch.allclose(run([2, 1, 0]), batched.flip(0), atol=1e-4)  # permuting the batch permutes the results


def test_wrong_number_of_seeds_is_an_error(tiny):
    model, clip, _ = tiny
    with pytest.raises(ValueError, match="2 seeds were given for a batch of 3"):
        denoise(model, TextGuidance(clip.encode(["x"])[0]), (3, 4, 4, 4, 4), steps=1, seed=[1, 2])


# --- the sampler ------------------------------------------------------------------------------------------------------


def test_video_has_n_frames_and_batch_caps_do_not_change_it(tiny):
    one = sample(tiny, keyframes=4, depth=3, batch_cap=1)
    assert one.shape == (1, 4, 28, 4, 4)
    for cap in (2, 8):
        # Equal up to float rounding (~1e-5 on the CPU): batched convolutions sum in a batch-size-dependent order.
        assert torch.allclose(sample(tiny, keyframes=4, depth=3, batch_cap=cap), one, atol=1e-4)


def test_parent_frames_are_unchanged_at_every_level(tiny):
    """A deeper hierarchy keeps every frame of a shallower one, exactly, at the multiples of L - 1."""
    shallow = sample(tiny, keyframes=4, depth=1)
    for depth in (2, 3):
        deeper = sample(tiny, keyframes=4, depth=depth)
        assert torch.equal(deeper[:, :, ::3], shallow)
        shallow = deeper


@pytest.mark.parametrize("method", ["replace", "guidance", "resample", "blend"])
def test_each_run_is_conditioned_on_its_parents(tiny, monkeypatch, method):
    calls = []
    original = hierarchy.denoise

    def spy(denoiser, guidance, shape, **kwargs):
        result = original(denoiser, guidance, shape, **kwargs)
        calls.append((shape, kwargs["conditioning"], kwargs["seed"], result))
        return result

    monkeypatch.setattr(hierarchy, "denoise", spy)
    video = sample(tiny, keyframes=4, depth=2, batch_cap=2, method=method)
    plan = HierarchyPlan(4, 2)
    assert [c[0][0] for c in calls] == [1, 2, 1]
    assert calls[0][1] is None
    segments = [0, 1, 2]
    for (shape, conditioning, seeds, result), first in zip(calls[1:], (0, 2)):
        for item in range(shape[0]):
            frames = plan.segment_frames(1, first + item)
            assert torch.equal(conditioning.known.latents[item], video[0, :, [frames[0], frames[-1]]])
            assert torch.equal(video[0, :, frames[1:-1]], result[item, :, 1:-1])
            assert seeds[item] == hierarchy.segment_seed(1, 1, segments[first + item])


def test_model_calls_are_runs_times_steps(tiny, monkeypatch):
    """sum over levels of ceil(segments / batch cap) x steps; CFG runs both passes in one call."""
    model = tiny[0]
    calls = []
    call = type(model).__call__
    monkeypatch.setattr(type(model), "__call__", lambda self, *a, **k: calls.append(a[0].shape[0]) or call(self, *a, **k))
    for cap, cfg in ((1, 7.5), (2, 7.5), (8, 1.0)):
        calls.clear()
        sample(tiny, keyframes=4, depth=3, batch_cap=cap, steps=2, cfg=cfg)
        assert len(calls) == sum(math.ceil(3**level / cap) for level in range(3)) * 2
        assert max(calls) == min(cap, 9) * (2 if cfg > 1 else 1)


def test_progress_counts_every_model_call(tiny, monkeypatch):
    from longvideo.utils import comfy

    updates = []
    monkeypatch.setattr(comfy, "throw_if_interrupted", lambda: updates.append(1))
    sample(tiny, keyframes=4, depth=3, batch_cap=2, steps=3)
    assert len(updates) == (1 + 2 + 5) * 3


def test_cancel_keeps_the_finished_levels_and_start_latent_goes_on(tiny, monkeypatch):
    from longvideo.utils import comfy

    updates = []

    def interrupt():
        updates.append(1)
        if len(updates) == (1 + 2) * 2 + 1:  # inside level 2, after levels 0 and 1
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(comfy, "throw_if_interrupted", interrupt)
    with pytest.raises(KeyboardInterrupt):
        sample(tiny, keyframes=4, depth=3, batch_cap=2)
    folder = os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], "LongVideo")
    assert os.listdir(folder) == ["hierarchical_partial_00001.latent"]
    saved = load_file(os.path.join(folder, "hierarchical_partial_00001.latent"))["latent_tensor"]
    monkeypatch.setattr(comfy, "throw_if_interrupted", lambda: None)
    full = sample(tiny, keyframes=4, depth=3, batch_cap=2)
    assert saved.shape == (1, 4, 10, 4, 4) and torch.equal(full[:, :, ::3], saved)
    assert torch.equal(sample(tiny, keyframes=4, depth=3, batch_cap=2, start_latent={"samples": saved}), full)


def test_per_level_prompts_reach_their_runs(tiny, monkeypatch):
    seen = []
    original = hierarchy.denoise
    monkeypatch.setattr(hierarchy, "denoise", lambda d, guidance, shape, **k: seen.append(guidance.positive) or original(d, guidance, shape, **k))
    lines = [entry[0][0] for entry in schedule(tiny, "global\nmiddle")]
    sample(tiny, keyframes=4, depth=3, batch_cap=8, text="global\nmiddle", layout="per level")
    assert torch.equal(seen[0], lines[0]) and all(torch.equal(row, lines[1][0]) for p in seen[1:] for row in p)
    seen.clear()
    lines = [entry[0][0] for entry in schedule(tiny, "a\nb\nc")]
    sample(tiny, keyframes=4, depth=2, batch_cap=8, text="a\nb\nc")
    assert torch.equal(seen[0], lines[1]) and torch.equal(seen[1], torch.cat(lines))


def test_learned_with_zero_infinet_keeps_parents(tiny, tmp_path):
    path = str(tmp_path / "zero.safetensors")
    save_infinet(path, InfiNet.for_unet_config(tiny[0].unet.config), "clean")
    (infinet,) = LongVideoInfiNetLoader().load("", "auto", infinet_path=path)
    video = sample(tiny, keyframes=4, depth=2, method="learned", infinet=infinet)
    assert torch.equal(video[:, :, ::3], sample(tiny, keyframes=4, depth=1))
    # learned re-noises the endpoints into the sample as replace does, so a zero InfiNet changes nothing at all
    assert torch.equal(video, sample(tiny, keyframes=4, depth=2))


def test_infill_cfg_guides_the_levels_after_the_keyframes(tiny):
    video = sample(tiny, keyframes=4, depth=2, cfg=7.5, infill_cfg=3.0)
    keyframes = sample(tiny, keyframes=4, depth=1, cfg=7.5)
    assert torch.equal(video[:, :, ::3], keyframes)
    # the infill level is what a run at cfg 3 makes from the same keyframes
    assert torch.equal(video, sample(tiny, keyframes=4, depth=2, cfg=3.0, start_latent={"samples": keyframes}))
    assert not torch.equal(video, sample(tiny, keyframes=4, depth=2, cfg=7.5))
    # 0 (the default) is the keyframes' cfg
    assert torch.equal(sample(tiny, keyframes=4, depth=2, cfg=7.5, infill_cfg=0.0), sample(tiny, keyframes=4, depth=2, cfg=7.5))


@pytest.mark.parametrize(("inputs", "message"), [
    ({"method": "learned"}, "needs InfiNet weights"),
    ({"keyframes": 2}, "at least 3"),
    ({"batch_cap": 0}, "batch cap must be at least 1"),
    ({"infill_cfg": -1.0}, "infill cfg must be at least 0"),
    ({"start_latent": {"samples": torch.zeros(1, 4, 5, 4, 4)}}, "5 frames is no level .* one of 4, 10"),
])
def test_bad_inputs_are_named(tiny, inputs, message):
    with pytest.raises(NodeInputError, match=message):
        sample(tiny, **inputs)


def test_infinet_with_another_method_is_an_error(tiny, tmp_path):
    path = str(tmp_path / "zero.safetensors")
    save_infinet(path, InfiNet.for_unet_config(tiny[0].unet.config), "clean")
    with pytest.raises(NodeInputError, match="method is 'replace': choose 'learned'"):
        sample(tiny, infinet=LongVideoInfiNetLoader().load("", "auto", infinet_path=path)[0])
