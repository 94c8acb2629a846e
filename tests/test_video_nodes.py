import gc
import os
import weakref

import av
import pytest
import torch
from safetensors.torch import load_file

from longvideo.nodes.common import NodeInputError
from longvideo.nodes.latents import LongVideoDecode, LongVideoEmptyLatent, LongVideoEncode
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.nodes.video import LongVideoSaveVideo
from longvideo.utils.video_io import VideoOutputError


@pytest.fixture(scope="module")
def vae(tiny_model_folder):
    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)[2]


def save(**inputs):
    arguments = {"filename_prefix": "LongVideo/test", "fps": 8.0, "format": "mp4", "crf": 19}
    arguments.update(inputs)
    return LongVideoSaveVideo().save(**arguments)


def output_files():
    root = os.environ["LONGVIDEO_OUTPUT_DIR"]
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_empty_latent_shape():
    samples = LongVideoEmptyLatent().generate(width=72, height=40, frames=5, batch_size=2)[0]["samples"]
    assert samples.shape == (2, 4, 5, 5, 9) and samples.abs().sum() == 0


@pytest.mark.parametrize(("inputs", "message"), [
    ({"width": 100}, "width 100 is not a multiple of 8: use 96 or 104"),
    ({"height": 30}, "height 30 is not a multiple of 8: use 24 or 32"),
    ({"frames": 0}, "frames must be at least 1"),
])
def test_empty_latent_rejects_bad_sizes(inputs, message):
    arguments = {"width": 64, "height": 64, "frames": 4, "batch_size": 1, **inputs}
    with pytest.raises(NodeInputError, match=message):
        LongVideoEmptyLatent().generate(**arguments)


def test_encode_decode_shapes_and_batches_agree(vae):
    frames = torch.rand(5, 48, 64, 3)
    latent = LongVideoEncode().encode(vae, frames, 2)[0]
    assert latent["samples"].shape == (1, 4, 5, 6, 8)
    assert torch.allclose(LongVideoEncode().encode(vae, frames, 5)[0]["samples"], latent["samples"], atol=1e-5)
    images = LongVideoDecode().decode(vae, latent, 2)[0]
    assert images.shape == (5, 48, 64, 3) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.allclose(LongVideoDecode().decode(vae, latent, 5)[0], images, atol=1e-5)


def test_encode_rejects_sizes_the_vae_cannot_take(vae):
    with pytest.raises(NodeInputError, match="60x44; width and height must be multiples of 8"):
        LongVideoEncode().encode(vae, torch.rand(2, 44, 60, 3), 4)


def test_save_from_images_writes_a_readable_mp4():
    result = save(images=torch.rand(9, 32, 48, 3), fps=12.0, frames_per_batch=4)
    item = result["ui"]["images"][0]
    assert result["ui"]["animated"] == (True,) and item["type"] == "output" and item["frames"] == 9
    path = os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], item["subfolder"], item["filename"])
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, float(stream.average_rate)) == (48, 32, 12.0)
        assert sum(1 for _ in container.decode(stream)) == 9
    assert output_files() == ["LongVideo/test_00001.mp4"]


def test_save_from_latent_holds_one_decoded_batch_at_a_time(vae, monkeypatch):
    """Each decoded batch is released before the next one is decoded: the full IMAGE never exists."""
    alive, most_alive = [], [0]
    decode_batches = vae.decode_batches

    def tracked(latents, frames_per_batch):
        for pixels in decode_batches(latents, frames_per_batch):
            gc.collect()
            alive[:] = [ref for ref in alive if ref() is not None]
            most_alive[0] = max(most_alive[0], len(alive))
            alive.append(weakref.ref(pixels))
            assert len(pixels) <= frames_per_batch
            yield pixels
            del pixels

    monkeypatch.setattr(vae, "decode_batches", tracked)
    latents = torch.randn(1, 4, 11, 4, 4)
    item = save(samples={"samples": latents}, vae=vae, frames_per_batch=3)["ui"]["images"][0]
    assert item["frames"] == 11 and most_alive[0] == 0
    with av.open(os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], item["subfolder"], item["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 11


def test_save_embeds_the_prompt():
    item = save(images=torch.rand(2, 16, 16, 3), prompt={"1": {"class_type": "X"}})["ui"]["images"][0]
    with av.open(os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], item["subfolder"], item["filename"])) as container:
        assert '"class_type": "X"' in container.metadata.get("prompt", "")


@pytest.mark.parametrize("prefix", ["../escape", "LongVideo/../../escape", "/tmp/escape"])
def test_save_refuses_prefixes_outside_the_output_folder(prefix):
    with pytest.raises((NodeInputError, VideoOutputError), match="filename_prefix"):
        save(images=torch.rand(2, 16, 16, 3), filename_prefix=prefix)
    assert not os.path.exists(os.environ["LONGVIDEO_OUTPUT_DIR"]) or output_files() == []


def test_save_needs_images_or_samples_with_vae(vae):
    with pytest.raises(NodeInputError, match="either 'images' or 'samples'"):
        save()
    with pytest.raises(NodeInputError, match="'samples' needs 'vae'"):
        save(samples={"samples": torch.zeros(1, 4, 2, 4, 4)})


def test_failed_decode_leaves_no_video_and_keeps_the_latents(vae, monkeypatch):
    def failing(latents, frames_per_batch):
        yield torch.rand(2, 32, 32, 3)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vae, "decode_batches", failing)
    latents = torch.randn(1, 4, 4, 4, 4)
    with pytest.raises(RuntimeError, match="out of memory") as raised:
        save(samples={"samples": latents}, vae=vae)
    assert output_files() == ["LongVideo/unsaved_00001.latent"]
    kept = os.path.join(os.environ["LONGVIDEO_OUTPUT_DIR"], "LongVideo", "unsaved_00001.latent")
    assert any(kept in note for note in raised.value.__notes__)
    assert torch.equal(load_file(kept)["latent_tensor"], latents)
