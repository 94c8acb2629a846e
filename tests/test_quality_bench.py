"""bench/quality.py's measures: right on drawn videos, and they catch a wrong colour, a wrong way and a jump at a seam."""


import numpy as np
import pytest

from longvideo.bench.quality import MODES, Generated, Options, Stretch, measure, summarise
from longvideo.tools.synthetic_shapes import ShapeClip, render


def drawn(direction="right", colour="red", frames=16, start=(14.0, 30.0)):
    if direction == "left":
        start = (64 - start[0], start[1])
    clip = ShapeClip("circle", colour, direction, start, 2.0, 7.0)
    return render(clip, frames)


def test_drawn_videos_score_full_marks():
    for seed in range(4):
        for prompt in ("a red circle moving right", "a green square moving left", "a blue triangle moving up",
                       "a yellow circle moving down"):
            generated = MODES["drawn"](None, prompt, seed, Options())
            result = measure(generated, prompt.split()[1], prompt.split()[2])
            assert result.colour_right and result.shape_right and result.directions_right == [True] and result.identity == 1.0


def test_the_shape_of_drawn_clips_is_read_right_through_the_embedded_vae():
    """Generated frames are decoded by the embedded model's VAE, which rounds corners: the shape must still read right."""
    import random
    from collections import Counter

    import torch

    from longvideo.models.loader import load_text_to_video
    from longvideo.utils.comfy import EMBEDDED_MODEL, find_model_folder
    from longvideo.tools.synthetic_shapes import find_shape, random_clip

    vae = load_text_to_video(find_model_folder(EMBEDDED_MODEL)).vae
    rng, right = random.Random(7), 0
    for _ in range(24):
        clip = random_clip(rng, 8)
        latents = vae.encode(torch.from_numpy(render(clip, 8)).float() / 255, 8)
        decoded = (np.concatenate([b.numpy() for b in vae.decode_batches(latents, 8)]) * 255).round().astype(np.uint8)
        shapes = [find_shape(frame).shape for frame in decoded]
        right += Counter(shapes).most_common(1)[0][0] == clip.shape  # ties: the first seen, not set order
    # 115 of 120 such clips read right; small circles the VAE squares off can read as squares, and a frame's fill near a
    # bound can flip with the float rounding of the thread count: a broken reader scores about a third.
    assert right >= 20


def test_a_wrong_shape_is_caught():
    assert not measure(Generated(drawn("right", "red"), [Stretch(0, 16, "right")]), "red", "square").shape_right


def test_per_prompt_lines_say_which_prompt_misses():
    from longvideo.bench.quality import per_prompt_lines

    right = measure(Generated(drawn("right", "red"), [Stretch(0, 16, "right")]), "red", "circle")
    wrong_shape = measure(Generated(drawn("right", "red"), [Stretch(0, 16, "right")]), "red", "square")
    lines = per_prompt_lines({"a red circle moving right": [right, right], "a red square moving right": [right, wrong_shape]})
    assert lines == [
        "    a red circle moving right: colour 100%, shape 100%, identity 100% (2 videos)",
        "    a red square moving right: colour 100%, shape 50%, identity 100% (2 videos)"]


def test_the_look_alike_negative_names_a_circle_for_a_square_and_keeps_the_rest():
    from longvideo.bench.quality import negative_prompt

    look_alike = Options(negative="look-alike")
    assert negative_prompt("a green square moving left", look_alike) == "a green circle moving left"
    assert negative_prompt("a red square moving up", look_alike) == "a red circle moving up"
    assert negative_prompt("a red circle moving up", look_alike) == ""  # drawn right without one
    assert negative_prompt("a blue triangle moving down", look_alike) == ""
    assert negative_prompt("a green square moving left", Options()) == ""
    with pytest.raises(SystemExit, match="--negative 'other'"):
        negative_prompt("a green square moving left", Options(negative="other"))


def test_drift_is_measured_per_block():
    from longvideo.bench.quality import BLOCK

    video = np.concatenate([np.repeat(drawn("right", "red")[:1], BLOCK, axis=0), np.full((BLOCK, 64, 64, 3), 128, np.uint8)])
    blocks = measure(Generated(video, [Stretch(0, 2 * BLOCK, "right")]), "red").blocks
    assert blocks[0][0] == 100 and blocks[1][0] == 0 and np.isnan(blocks[1][1])


def test_wrong_colour_and_wrong_way_are_caught():
    video = drawn("right", "blue")
    result = measure(Generated(video, [Stretch(0, 16, "right")]), "red")
    assert not result.colour_right and result.identity == 0.0 and result.directions_right == [True]
    result = measure(Generated(video[::-1].copy(), [Stretch(0, 16, "right")]), "blue")
    assert result.directions_right == [False]
    still = np.repeat(video[:1], 16, axis=0)
    assert measure(Generated(still, [Stretch(0, 16, "right")]), "blue").directions_right == [False]


def test_a_jump_at_a_seam_shows_in_the_seam_ratio():
    smooth = drawn("right", frames=24)
    seamless = measure(Generated(smooth, [Stretch(0, 12, "right"), Stretch(12, 12, "right")], seams=[12]), "red")
    assert summarise([seamless])["seam"] == pytest.approx(1.0, abs=0.2)
    jumped = np.concatenate([smooth[:12], np.roll(smooth[12:], 10, axis=1)])
    result = measure(Generated(jumped, [Stretch(0, 12, "right"), Stretch(12, 12, "right")], seams=[12]), "red")
    assert summarise([result])["seam"] > 5


def test_a_jump_anywhere_is_a_teleport_and_smooth_motion_is_not():
    smooth = drawn("right", frames=24)
    assert summarise([measure(Generated(smooth, [Stretch(0, 24, "right")]), "red")])["teleport"] == 0.0
    # a jump away from any seam: the mean seam step cannot see it, the teleport share does
    jumped = np.concatenate([smooth[:7], np.roll(smooth[7:], 10, axis=1)])
    results = [measure(Generated(jumped, [Stretch(0, 24, "right")], seams=[12]), "red"),
               measure(Generated(smooth, [Stretch(0, 24, "right")], seams=[12]), "red")]
    assert summarise(results)["teleport"] == 50.0
    assert summarise(results[:1])["seam"] == pytest.approx(1.0, abs=0.2)


def test_an_empty_video_has_no_colour_and_no_direction():
    grey = np.full((16, 64, 64, 3), 128, np.uint8)
    result = measure(Generated(grey, [Stretch(0, 16, "up")]), "red")
    assert not result.colour_right and result.directions_right == [False] and result.identity == 0.0


def test_direction_probe_sees_the_direction_in_the_drawn_clips_and_measures_a_model(tiny_model_folder):
    from longvideo.bench.direction_probe import probe, reversed_prompt

    assert reversed_prompt("a red circle moving up") == "a red circle moving down"
    result = probe(tiny_model_folder, clips=48, held_out=4, frames=8)
    best_right, best_reversed = result["best"]
    assert best_reversed > best_right  # a drawn clip starts on the side its direction leaves from
    assert all(np.isfinite(result["model"]))
    assert probe(tiny_model_folder, clips=48, held_out=4, frames=8) == result


def test_the_cost_comparison_times_both_methods_on_a_model(tiny_model_folder, capsys):
    from longvideo.bench.quality import load_unet3d_model, print_cost

    model = load_unet3d_model(tiny_model_folder)
    print_cost(model, "a red circle moving right", ["replace", "resample"], range(1), Options(frames=4, chunks=2, known=1, steps=2))
    line = capsys.readouterr().out.strip()
    assert line.startswith("continuation, 2 chunks of 4, 1 runs each") and "resample / replace = " in line
    assert float(line.rsplit("= ", 1)[1]) > 0


def test_latent_stretches_and_seams_land_on_the_pixel_frames_of_a_causal_vae():
    """For a 4x causal VAE latent frame 0 is pixel frame 0 and latent frame i > 0 pixel frames 4 (i - 1) + 1 .. 4 i: a
    chunk seam before latent frame 5 is the step into pixel frame 17, a stretch of latent frames 5-7 pixels 17-28."""
    from longvideo.bench.quality import BenchModel, made

    model = BenchModel("causal", None, None, lambda latents: np.zeros((4 * (latents.shape[2] - 1) + 1, 8, 8, 3), np.uint8),
                       temporal=4)
    generated = made(model, np.zeros((1, 16, 8, 1, 1)), [Stretch(0, 5, "right"), Stretch(5, 3, "down")], [5])
    assert generated.video.shape[0] == 29
    assert [(s.first, s.frames) for s in generated.stretches] == [(0, 17), (17, 12)]
    assert generated.seams == [17]
    same = made(BenchModel("plain", None, None, lambda latents: np.zeros((latents.shape[2], 8, 8, 3), np.uint8)),
                np.zeros((1, 4, 8, 1, 1)), [Stretch(0, 8, "up")], [4])
    assert [(s.first, s.frames) for s in same.stretches] == [(0, 8)] and same.seams == [4]
