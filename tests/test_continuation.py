import os

import pytest
import torch
from safetensors.torch import load_file

from longvideo.nodes.common import NodeInputError
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.continuation import LongVideoContinuationSampler, LongVideoPromptSchedule
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling import continuation
from longvideo.sampling.continuation import ContinuationSettings, known_frame_counts


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


@pytest.fixture
def calls(monkeypatch):
    """Every denoise call the continuation makes: (known latents or None, prompt embeddings, result)."""
    recorded = []
    original = continuation.denoise

    def spy(denoiser, guidance, shape, **kwargs):
        result = original(denoiser, guidance, shape, **kwargs)
        known = kwargs["conditioning"].known if kwargs["conditioning"] is not None else None
        recorded.append((known, guidance.positive, result))
        return result

    monkeypatch.setattr(continuation, "denoise", spy)
    return recorded


def sample(tiny, chunks=3, frames=6, k=(2, 2), seed=1, **optional):
    model, clip, vae = tiny
    encode = LongVideoTextEncode().encode
    return LongVideoContinuationSampler().sample(
        model, encode(clip, "a red circle moving right")[0], encode(clip, "")[0], 32, 32, frames, chunks, k[0], k[1],
        optional.pop("method", "replace"), seed, optional.pop("steps", 3), 7.5, "ddim", **optional,
    )[0]["samples"]


def test_frame_count_follows_the_formula(tiny):
    assert sample(tiny, chunks=4, frames=6, k=(2, 2)).shape[2] == 6 + 3 * (6 - 2)
    image = torch.rand(1, 40, 40, 3)
    assert sample(tiny, chunks=3, frames=6, k=(2, 2), start_image=image, vae=tiny[2]).shape[2] == 1 + (6 - 1) + 2 * (6 - 2)
    clip = {"samples": torch.randn(1, 4, 5, 4, 4)}
    assert sample(tiny, chunks=2, frames=6, k=(3, 3), start_latent=clip).shape[2] == 5 + 2 * (6 - 3)


def test_random_conditioning_counts_stay_in_range_and_add_up():
    settings = ContinuationSettings(frames_per_chunk=8, chunks=40, min_known=1, max_known=4)
    counts = known_frame_counts(settings, seed=5, start_frames=0)
    assert counts[0] == 0 and all(1 <= k <= 4 for k in counts[1:]) and len(set(counts[1:])) > 1
    assert counts == known_frame_counts(settings, seed=5, start_frames=0)


def test_each_chunk_continues_from_the_last_frames_of_the_previous(tiny, calls):
    out = sample(tiny, chunks=4, frames=6, k=(1, 3), seed=9)
    for (_, _, previous), (known, _, current) in zip(calls, calls[1:]):
        k = known.latents.shape[2]
        assert torch.equal(known.latents, previous[:, :, -k:])
        assert torch.equal(current[:, :, :k], previous[:, :, -k:])
    assert torch.equal(out[:, :, -3:], calls[-1][2][:, :, -3:])


def test_start_image_is_frame_zero_exactly(tiny, calls):
    out = sample(tiny, chunks=2, frames=5, k=(1, 1), start_image=torch.rand(2, 32, 32, 3), vae=tiny[2])
    assert torch.equal(out[:, :, :1], calls[0][0].latents)


def test_same_seed_same_video_and_more_chunks_extend_it(tiny):
    three = sample(tiny, chunks=3, seed=4, k=(1, 3))
    assert torch.equal(three, sample(tiny, chunks=3, seed=4, k=(1, 3)))
    four = sample(tiny, chunks=4, seed=4, k=(1, 3))
    assert torch.equal(four[:, :, : three.shape[2]], three)
    assert not torch.equal(sample(tiny, chunks=3, seed=5, k=(1, 3)), three)


def test_prompt_schedule_gives_each_chunk_its_line(tiny, calls):
    schedule = LongVideoPromptSchedule().encode(tiny[1], "a red circle\n\na blue square\n")[0]
    sample(tiny, chunks=3, prompt_schedule=schedule)
    lines = [entry[0][0] for entry in schedule]
    assert [torch.equal(positive, lines[min(c, 1)]) for c, (_, positive, _) in enumerate(calls)] == [True] * 3


def test_guidance_method_runs(tiny):
    assert sample(tiny, chunks=2, frames=5, method="guidance", steps=2).shape[2] == 5 + 3


def test_anchored_colours_match_the_first_chunk(tiny):
    out = sample(tiny, chunks=3, frames=6, k=(2, 2), anchor_colours=True)
    first, last = out[:, :, :6], out[:, :, -4:]
    assert torch.allclose(first.mean(dim=(0, 2, 3, 4)), last.mean(dim=(0, 2, 3, 4)), atol=1e-4)
    assert torch.allclose(first.std(dim=(0, 2, 3, 4)), last.std(dim=(0, 2, 3, 4)), atol=1e-4)


def test_cancel_keeps_the_finished_chunks(tiny, monkeypatch):
    steps_seen = []
    from longvideo.utils import comfy

    def interrupt():
        steps_seen.append(1)
        if len(steps_seen) == 2 * 3 + 2:  # inside the third chunk
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(comfy, "throw_if_interrupted", interrupt)
    with pytest.raises(KeyboardInterrupt):
        sample(tiny, chunks=5, frames=6, k=(2, 2))
    folder = os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], "LongVideo")
    assert os.listdir(folder) == ["continuation_partial_00001.latent"]
    saved = load_file(os.path.join(folder, "continuation_partial_00001.latent"))
    assert saved["latent_tensor"].shape == (1, 4, 6 + 4, 4, 4)
    monkeypatch.setattr(comfy, "throw_if_interrupted", lambda: None)
    full = sample(tiny, chunks=5, frames=6, k=(2, 2))
    assert torch.equal(full[:, :, :10], saved["latent_tensor"])


@pytest.mark.parametrize(("inputs", "message"), [
    ({"frames": 4, "k": (2, 4)}, "must exceed the conditioning frames"),
    ({"k": (3, 2)}, r"1 <= min \(3\) <= max \(2\)"),
])
def test_bad_settings_are_named(tiny, inputs, message):
    with pytest.raises(NodeInputError, match=message):
        sample(tiny, **inputs)


def test_start_image_needs_a_vae(tiny):
    with pytest.raises(NodeInputError, match="start_image needs 'vae'"):
        sample(tiny, start_image=torch.rand(1, 32, 32, 3))
