import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from longvideo.utils import video_io
from longvideo.utils.video_io import VideoOutputError, VideoWriter, reserve_output_path, resolve_output_path, write_video

COLOURS = [(230, 40, 40), (40, 200, 60), (50, 60, 220), (200, 180, 30), (128, 128, 128)]


def solid_frames(n, height, width, start=0):
    """float tensor [n, H, W, 3] in 0..1, frame i a solid colour from COLOURS."""
    colours = torch.tensor([COLOURS[(start + i) % len(COLOURS)] for i in range(n)], dtype=torch.float32) / 255
    return colours[:, None, None, :].expand(n, height, width, 3).contiguous()


def batches(total, size, height, width):
    for start in range(0, total, size):
        yield solid_frames(min(size, total - start), height, width, start)


def read_video(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, dict(container.metadata)


def test_mp4_readback_count_size_fps_and_colours(tmp_path):
    path = str(tmp_path / "clip.mp4")
    info = write_video(batches(17, 5, 48, 64), path, fps=8, metadata={"prompt": '{"1": {}}', "comment": "hi"})
    assert info == {"frames": 17, "width": 64, "height": 48, "fps": 8, "path": path}
    frames, rate, metadata = read_video(path)
    assert len(frames) == 17
    assert frames[0].shape == (48, 64, 3)
    assert rate == 8
    assert metadata["prompt"] == '{"1": {}}' and metadata["comment"] == "hi"
    expected = solid_frames(17, 48, 64).mul(255).numpy()
    assert np.abs(np.stack(frames).astype(np.float32) - expected).mean() < 3
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_fractional_fps_and_uint8_numpy_input(tmp_path):
    path = str(tmp_path / "ntsc.mp4")
    frames = (solid_frames(6, 32, 32).numpy() * 255).round().astype(np.uint8)
    write_video([frames[:2], frames[2:]], path, fps=30000 / 1001)
    decoded, rate, _ = read_video(path)
    assert len(decoded) == 6 and rate == Fraction(30000, 1001)
    assert np.abs(np.stack(decoded).astype(np.float32) - frames).mean() < 3


def test_out_of_range_floats_are_clamped(tmp_path):
    path = str(tmp_path / "clamp.mp4")
    frames = torch.full((2, 16, 16, 3), 5.0)
    frames[:, :, :8] = -3.0
    write_video([frames], path, fps=4)
    decoded, _, _ = read_video(path)
    assert decoded[0][:, :6].max() < 10 and decoded[0][:, 10:].min() > 245


@pytest.mark.parametrize("video_format", ["webm", "gif"])
def test_webm_and_gif_readback(tmp_path, video_format):
    path = str(tmp_path / f"clip.{video_format}")
    info = write_video(batches(7, 3, 40, 56), path, fps=10, video_format=video_format)
    assert info["frames"] == 7
    frames, _, _ = read_video(path)
    assert len(frames) == 7
    assert frames[0].shape == (40, 56, 3)
    expected = solid_frames(7, 40, 56).mul(255).numpy()
    assert np.abs(np.stack(frames).astype(np.float32) - expected).mean() < 6


def test_gif_keeps_odd_size_and_varied_colours(tmp_path):
    path = str(tmp_path / "odd.gif")
    gradient = torch.linspace(0, 1, 33)[None, None, :, None] * torch.tensor([1.0, 0.5, 0.2])
    frames = gradient.expand(3, 21, 33, 3).contiguous()
    write_video([frames], path, fps=5, video_format="gif")
    decoded, _, _ = read_video(path)
    assert len(decoded) == 3 and decoded[0].shape == (21, 33, 3)
    assert np.abs(np.stack(decoded).astype(np.float32) - frames.mul(255).numpy()).mean() < 6


def test_odd_size_is_padded_to_even_by_replicating_edge(tmp_path):
    path = str(tmp_path / "odd.mp4")
    frames = torch.zeros(3, 33, 47, 3)
    frames[:, :, -1] = 1.0  # white last column, copied into the padding column
    frames[:, -1, :, 1] = 1.0  # green in the last row, copied into the padding row
    with VideoWriter(path, fps=6) as writer:
        writer.write(frames)
    assert (writer.width, writer.height, writer.frames_written) == (47, 33, 3)
    decoded, _, _ = read_video(path)
    assert decoded[0].shape == (34, 48, 3)
    assert decoded[0][10, -1].min() > 200
    assert decoded[0][-1, 10, 1] > 200 and decoded[0][-1, 10, 0] < 60


@pytest.mark.parametrize(
    ("video_format", "error"),
    [("mp4", RuntimeError("boom")), ("webm", KeyboardInterrupt()), ("gif", VideoOutputError("subclass"))],
)
def test_exception_in_with_block_leaves_no_file(tmp_path, video_format, error):
    path = str(tmp_path / f"broken.{video_format}")
    with pytest.raises(type(error)):
        with VideoWriter(path, fps=8, video_format=video_format) as writer:
            writer.write(solid_frames(60, 16, 16))  # enough frames to get past encoder lookahead
            assert os.listdir(tmp_path) == [f".broken.{video_format}.partial"]
            raise error
    assert os.listdir(tmp_path) == []


def test_batch_size_change_raises_and_leaves_no_file(tmp_path):
    path = str(tmp_path / "mixed.webm")
    with pytest.raises(VideoOutputError, match="32x32"):
        write_video([solid_frames(2, 32, 32), solid_frames(2, 48, 32)], path, fps=8, video_format="webm")
    assert os.listdir(tmp_path) == []


def test_empty_iterable_leaves_no_file(tmp_path):
    path = str(tmp_path / "empty.mp4")
    with pytest.raises(VideoOutputError, match="no frames"):
        write_video(iter([]), path, fps=8)
    with pytest.raises(VideoOutputError, match="no frames"):
        write_video([torch.zeros(0, 16, 16, 3)], path, fps=8)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": -5}, "fps"),
        ({"fps": 5000}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": "8"}, "fps"),
        ({"video_format": "avi"}, "video_format"),
        ({"crf": 64}, "crf"),
        ({"crf": 2.5}, "crf"),
    ],
)
def test_bad_settings_raise_naming_the_input(tmp_path, kwargs, named):
    args = {"path": str(tmp_path / "x.mp4"), "fps": 8, **kwargs}
    with pytest.raises(VideoOutputError, match=named):
        VideoWriter(**args)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "frames",
    [torch.zeros(16, 16, 3), torch.zeros(2, 16, 16, 4), np.zeros((2, 3, 16, 16), np.float32), [[0.0]]],
)
def test_bad_frame_shapes_raise_with_expected_shape(tmp_path, frames):
    with pytest.raises(VideoOutputError, match=r"\[frames, height, width, 3\]"):
        write_video([frames], str(tmp_path / "x.mp4"), fps=8)
    assert os.listdir(tmp_path) == []


def test_bad_dtype_raises(tmp_path):
    with pytest.raises(VideoOutputError, match="dtype"):
        write_video([np.zeros((1, 8, 8, 3), np.int32)], str(tmp_path / "x.mp4"), fps=8)


def test_resolve_output_path_counter_and_subfolders(tmp_path):
    out = str(tmp_path)
    full, sub, name = resolve_output_path(out, "clip", "mp4")
    assert (full, sub, name) == (os.path.join(out, "clip_00001.mp4"), "", "clip_00001.mp4")
    open(full, "w").close()
    open(os.path.join(out, "clip_00007.mp4"), "w").close()
    open(os.path.join(out, "clip_00009.webm"), "w").close()  # other extension: ignored
    open(os.path.join(out, "clipx_00020.mp4"), "w").close()  # other prefix: ignored
    assert resolve_output_path(out, "clip", "mp4")[2] == "clip_00008.mp4"
    held = reserve_output_path(out, "clip", "mp4")  # being written: taken
    assert held.filename == "clip_00008.mp4" and os.path.exists(os.path.join(out, ".clip_00008.mp4.partial"))
    assert resolve_output_path(out, "clip", "mp4")[2] == "clip_00009.mp4"
    held.discard()
    open(os.path.join(out, ".clip_00008.mp4.partial"), "w").close()  # left by a killed writer: removed, not counted
    assert resolve_output_path(out, "clip", "mp4")[2] == "clip_00008.mp4"
    assert not os.path.exists(os.path.join(out, ".clip_00008.mp4.partial"))

    full, sub, name = resolve_output_path(out, "videos/run1", "webm")
    assert (sub, name) == ("videos", "run1_00001.webm")
    assert full == os.path.join(out, "videos", "run1_00001.webm")
    assert os.path.isdir(os.path.join(out, "videos"))


@pytest.mark.parametrize("prefix", ["", "  ", "../escape", "videos/../clip", "videos/../../escape", "/etc/clip", "videos/",
                                    "x" * 300, "videos/" + "y" * 256 + "/clip"]
                         + (["C:clip"] if os.name == "nt" else []))
def test_resolve_output_path_rejects_bad_prefixes(tmp_path, prefix):
    out = tmp_path / "output"
    out.mkdir()
    with pytest.raises(VideoOutputError, match="filename_prefix"):
        resolve_output_path(str(out), prefix, "mp4")
    assert list(tmp_path.rglob("*")) == [out]


def test_resolve_output_path_rejects_symlink_escape(tmp_path):
    out, outside = tmp_path / "output", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(VideoOutputError, match="filename_prefix"):
        resolve_output_path(str(out), "link/clip", "mp4")
    with pytest.raises(VideoOutputError, match="filename_prefix"):
        resolve_output_path(str(out), "link/new/clip", "mp4")
    assert list(outside.iterdir()) == []


def test_video_formats_constant():
    assert video_io.VIDEO_FORMATS == ("mp4", "webm", "gif")


def test_latent_file_keeps_the_packs_info_and_loads_as_comfyui_does(tmp_path):
    from longvideo.utils.video_io import load_latent_file, reserve_output_path, save_latent_file
    from safetensors.torch import load_file

    latents = torch.randn(1, 4, 3, 2, 2)
    info = {"joins": [2], "run": {"seed": 5}}
    path = save_latent_file(latents, reserve_output_path(str(tmp_path), "LongVideo/x", "latent"), info)
    assert set(load_file(path)) == {"latent_tensor", "latent_format_version_0"}  # what ComfyUI's LoadLatent reads
    loaded, loaded_info = load_latent_file(path)
    assert torch.equal(loaded, latents) and loaded_info == info
    plain = save_latent_file(latents, reserve_output_path(str(tmp_path), "LongVideo/y", "latent"))
    assert load_latent_file(plain)[1] == {}
