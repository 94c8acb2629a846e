"""The training script writes a folder the loader reads, resumes exactly, and the shipped model it made is usable."""

import json
import os
import random
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from longvideo.models.loader import load_text_to_video
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling.denoise import TextGuidance, denoise
from longvideo.tools import train_tiny_model
from longvideo.tools.synthetic_shapes import find_shape, random_clip
from longvideo.utils.comfy import EMBEDDED_MODEL, PACK_CHECKPOINTS_FOLDER, find_model_folder, list_model_folders

MICRO = train_tiny_model.CONFIGS["micro"]
SHIPPED = os.path.join(PACK_CHECKPOINTS_FOLDER, EMBEDDED_MODEL)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


def test_training_writes_a_loadable_folder_of_safetensors(tmp_path):
    out = train_tiny_model.train(str(tmp_path / "model"), str(tmp_path / "work"), MICRO, seed=0, log=lambda _: None)
    weights = [f for f in files_under(out) + files_under(tmp_path / "work") if not f.endswith((".json", ".txt"))]
    assert weights and all(f.endswith(".safetensors") for f in weights), weights
    model = load_text_to_video(out)
    assert model.vae.downscale == 8 and model.denoiser.latent_channels == 4
    assert model.denoiser.prediction_type == train_tiny_model.SCHEDULER_CONFIG["prediction_type"] == "v_prediction"
    tokens, _ = model.text_encoder.encode(["a red circle moving right", ""])
    latents = denoise(model.denoiser, TextGuidance(tokens[:1], tokens[1:], 5.0), (1, 4, 4, 8, 8), steps=2, seed=0)
    frames = torch.cat(list(model.vae.decode_batches(latents, 4)))
    assert frames.shape == (4, 64, 64, 3)


def test_a_known_frames_folder_is_fine_tuned_further_not_widened_again(tmp_path):
    first = train_tiny_model.train(str(tmp_path / "first"), str(tmp_path / "work-a"), MICRO, seed=0, log=lambda _: None)
    again = train_tiny_model.train(str(tmp_path / "again"), str(tmp_path / "work-b"), MICRO, seed=1, log=lambda _: None,
                                   start_from=first)
    configs = [json.load(open(os.path.join(folder, "unet", "config.json"))) for folder in (first, again)]
    assert configs[0]["in_channels"] == configs[1]["in_channels"] == 2 * configs[0]["out_channels"] + 1
    assert configs[1]["known_frames_input"] == configs[0]["known_frames_input"] == "mask"
    weights = [load_file(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")) for folder in (first, again)]
    assert not torch.equal(weights[0]["conv_in.weight"], weights[1]["conv_in.weight"])


def test_each_prompt_word_is_one_token():
    tokenizer = train_tiny_model.build_tokenizer()
    tokens = tokenizer.tokenize("a yellow triangle moving down")
    assert tokens == ["a</w>", "yellow</w>", "triangle</w>", "moving</w>", "down</w>"]
    assert len(tokenizer.tokenize("purple")) > 1  # other words fall back to characters and pieces


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = train_tiny_model.TrainConfig(**{**train_tiny_model.asdict(MICRO), "unet_steps": 4})
    straight = train_tiny_model.train(str(tmp_path / "straight"), str(tmp_path / "work-a"), config, every=1, log=lambda _: None)

    save = train_tiny_model.Checkpoint.save

    def save_then_stop(self, name, tensors, **state):
        save(self, name, tensors, **state)
        if state.get("unet_step") == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_tiny_model.Checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_tiny_model.train(str(tmp_path / "resumed"), str(tmp_path / "work-b"), config, every=1, log=lambda _: None)
    monkeypatch.undo()
    messages = []
    resumed = train_tiny_model.train(str(tmp_path / "resumed"), str(tmp_path / "work-b"), config, every=1, log=messages.append)
    assert not any(m.startswith(("vae step", "unet step 1/", "unet step 2/")) for m in messages), messages
    a, b = load_text_to_video(straight), load_text_to_video(resumed)
    for part in ("unet", "text_model", "vae"):
        first = getattr(a.denoiser if part == "unet" else a.text_encoder if part == "text_model" else a.vae, part).state_dict()
        second = getattr(b.denoiser if part == "unet" else b.text_encoder if part == "text_model" else b.vae, part).state_dict()
        for key in first:
            assert torch.equal(first[key], second[key]), (part, key)


def test_other_settings_in_the_work_folder_are_refused(tmp_path):
    train_tiny_model.train(str(tmp_path / "m"), str(tmp_path / "work"), MICRO, log=lambda _: None)
    with pytest.raises(SystemExit, match="other settings"):
        train_tiny_model.train(str(tmp_path / "m"), str(tmp_path / "work"), MICRO, seed=1, log=lambda _: None)


def test_the_object_weighs_more_in_the_loss_in_every_frame():
    background = torch.tensor([0.5, -1.0, 0.2, 0.8]).view(1, 4, 1, 1, 1)
    clean = background.expand(2, 4, 3, 8, 8).clone()
    direction = torch.tensor([1.0, 2.0, -1.0, 0.5])
    expected = torch.ones(2, 1, 3, 8, 8)
    for item in range(2):
        for frame in range(3):
            scale = 1.0 / (1 + frame + item)  # fainter objects in later frames: each frame is judged on its own
            y, x = 2 * frame + item, 5 - frame
            clean[item, :, frame, y, x] += scale * direction
            clean[item, :, frame, y + 1, x] += 0.3 * scale * direction  # an edge the object reaches: counts
            clean[item, :, frame, y, x + 1] += 0.1 * scale * direction  # too faint: background
            expected[item, 0, frame, y, x] = expected[item, 0, frame, y + 1, x] = 5.0
    assert torch.equal(train_tiny_model.object_weights(clean, 5.0), expected)


def test_the_shape_contrast_names_another_shape_and_skips_empty_prompts():
    prompts = ["a red square moving left", "", "a blue circle moving up", "a green triangle moving down"] * 4
    wrong, named = train_tiny_model.other_shape_prompts(prompts, torch.Generator().manual_seed(0))
    assert named.tolist() == [1.0, 0.0, 1.0, 1.0] * 4
    for prompt, swapped in zip(prompts, wrong):
        if prompt:
            before, after = prompt.split(), swapped.split()
            assert after[2] in train_tiny_model.SHAPES and after[2] != before[2]
            assert after[:2] + after[3:] == before[:2] + before[3:]
        else:
            assert swapped == ""
    assert len({w.split()[2] for w in wrong[0::4]}) == 2  # either other shape is drawn


def test_a_shape_pair_is_one_clip_drawn_as_a_square_and_as_a_circle():
    clip = random_clip(random.Random(3), 16)
    square, circle = train_tiny_model.shape_pair(clip)
    assert (square.shape, circle.shape) == ("square", "circle")
    assert replace(square, shape=clip.shape) == replace(circle, shape=clip.shape) == clip


def test_a_pair_batch_keeps_the_two_clips_of_a_pair_together():
    pairs, labels = 6, []
    latents = torch.randn(2 * pairs, 4, 5, 8, 8)
    for pair in range(pairs):
        labels += [[1, pair % 4, pair % 4], [0, pair % 4, pair % 4]]  # square, then circle; colour and direction per pair
    config = train_tiny_model.TrainConfig(unet_batch=8)
    clean, prompts = train_tiny_model.pair_batch((latents, torch.tensor(labels)), 2.0, config, torch.Generator().manual_seed(1))
    assert clean.shape == (8, 4, 5, 8, 8) and all(prompts)
    reversed_pairs = 0
    for item in range(0, 8, 2):
        square, circle = prompts[item].split(), prompts[item + 1].split()
        assert (square[2], circle[2]) == ("square", "circle") and square[:2] + square[3:] == circle[:2] + circle[3:]
        matches = [p for p in range(pairs) if torch.equal(clean[item], 2 * latents[2 * p])]
        flipped = [p for p in range(pairs) if torch.equal(clean[item], 2 * latents[2 * p].flip(1))]
        source, backwards = (matches[0], False) if matches else (flipped[0], True)
        assert torch.equal(clean[item + 1], 2 * (latents[2 * source + 1].flip(1) if backwards else latents[2 * source + 1]))
        reversed_pairs += backwards
    assert 0 < reversed_pairs < 4  # this seed reverses some pairs and not others: each pair is reversed as one


def test_the_pair_difference_loss_sees_only_what_the_shape_word_changes():
    clean = torch.zeros(2, 4, 3, 8, 8)
    clean[0, :, :, 2:4, 2:4] = 1.0
    clean[1, :, :, 2:4, 2:4] = 1.0
    clean[1, :, :, 2, 2] = 0.2  # the circle lacks a corner: the only place the pair differs
    target = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    shared_error = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert train_tiny_model.pair_difference_error(target + shared_error, target, clean).item() == pytest.approx(0, abs=1e-6)
    wrong_corner = target.clone()
    wrong_corner[1, :, :, 2, 2] += 0.5  # the circle's prediction off at the corner only
    error = train_tiny_model.pair_difference_error(wrong_corner, target, clean)
    assert error.item() == pytest.approx(0.25)  # averaged over the corner, where the clips differ, not the whole frame
    wrong_elsewhere = target.clone()
    wrong_elsewhere[1, :, :, 6, 6] += 0.5
    assert train_tiny_model.pair_difference_error(wrong_elsewhere, target, clean).item() == pytest.approx(0, abs=1e-6)


def test_shape_pairs_train_the_text_to_video_stage_too(tmp_path):
    def plain_stage_weights(config, name):
        folder = train_tiny_model.train(str(tmp_path / name), str(tmp_path / (name + ".work")), config, seed=0,
                                        log=lambda _: None)
        return load_file(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))

    plain = replace(MICRO, known_frames_steps=0)
    paired_config = replace(plain, shape_pair_clips=2, shape_pair_share=1.0)
    without, paired = plain_stage_weights(plain, "without"), plain_stage_weights(paired_config, "paired")
    assert without.keys() == paired.keys()
    assert any(not torch.equal(without[key], paired[key]) for key in without)


def test_the_shape_spread_moves_squares_away_from_circles(tmp_path):
    """The same VAE fine-tune with and without the spread: only the squares' targets differ."""
    from longvideo.tools.synthetic_shapes import render

    clips = [random_clip(random.Random(seed), 4) for seed in range(4)]
    latents = {}
    for spread in (0.0, 4.0):
        config = replace(MICRO, shape_spread=spread, shape_spread_steps=12, shape_spread_lr=3e-3)
        torch.manual_seed(0)
        vae = train_tiny_model.build_models(config, train_tiny_model.build_tokenizer())[0]
        checkpoint = train_tiny_model.Checkpoint(str(tmp_path / f"work-{spread}"), config, 0)
        train_tiny_model.spread_squares(vae, config, 0, checkpoint, 6, lambda _: None)
        assert checkpoint.state()["shape_spread_step"] == 12
        with torch.no_grad():
            for shape in ("square", "circle"):
                pixels = torch.cat([train_tiny_model.to_pixels(render(replace(clip, shape=shape), 4)) for clip in clips])
                latents[spread, shape] = vae.encode(pixels).latent_dist.mode()
    apart = {spread: (latents[spread, "square"] - latents[spread, "circle"]).norm() for spread in (0.0, 4.0)}
    assert apart[4.0] > 1.3 * apart[0.0]


def test_the_shipped_model_is_small_safetensors_and_offered_by_default():
    files = files_under(SHIPPED)
    assert sum(os.path.getsize(os.path.join(SHIPPED, f)) for f in files) <= 20 * 2**20
    assert [f for f in files if not f.endswith((".json", ".txt"))] == [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
    ]
    assert EMBEDDED_MODEL in list_model_folders()  # beside the test's own (empty) models folder
    assert find_model_folder(EMBEDDED_MODEL) == SHIPPED
    options, settings = LongVideoModelLoader.INPUT_TYPES()["required"]["model"]
    assert settings["default"] == EMBEDDED_MODEL and EMBEDDED_MODEL in options


def test_a_user_model_of_the_same_name_comes_first(tiny_model_folder, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_model_folder, tmp_path / "mine" / EMBEDDED_MODEL)
    monkeypatch.setenv("LONGVIDEO_MODELS_DIR", str(tmp_path / "mine"))
    assert find_model_folder(EMBEDDED_MODEL) == str(tmp_path / "mine" / EMBEDDED_MODEL)


@pytest.mark.parametrize("prompt", ["a red circle moving right", "a blue square moving up"])
def test_the_shipped_model_draws_the_prompted_colour(prompt):
    """The shipped weights do what bench/quality.py measures at scale: one seed, the prompt's colour in most frames."""
    model = load_text_to_video(SHIPPED)
    tokens, _ = model.text_encoder.encode([prompt, ""])
    latents = denoise(model.denoiser, TextGuidance(tokens[:1], tokens[1:], 7.5), (1, 4, 16, 8, 8), steps=20, seed=0,
                      scheduler="dpmpp_2m")
    frames = torch.cat(list(model.vae.decode_batches(latents, 16))).numpy()
    colours = [find_shape(frame).colour for frame in frames]
    assert sum(c == prompt.split()[1] for c in colours) >= 12, colours
