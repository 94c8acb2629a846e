"""tools/train_infinet.py: InfiNet trained on chopped synthetic videos, on top of a frozen tiny UNet3D."""

import json
import os
import random

import pytest
import torch
from safetensors.torch import load_file

from longvideo.models.denoiser import KnownFrames
from longvideo.models.infinet import InfiNet, InfiNetDenoiser, load_infinet, save_infinet
from longvideo.models.loader import load_text_to_video
from longvideo.nodes.conditioning import LongVideoTextEncode
from longvideo.nodes.continuation import LongVideoPromptSchedule
from longvideo.nodes.hierarchy import LongVideoHierarchicalSampler, LongVideoInfiNetLoader
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.tools import train_infinet, video_chop
from longvideo.tools.synthetic_shapes import random_clip, render
from longvideo.tools.train_infinet import Trainer, TrainSettings
from longvideo.utils.video_io import write_video

QUIET = dict(log=lambda *_: None)


def chopped(folder, name, frames, segment_frames, seed=0):
    clip = random_clip(random.Random(seed), frames, size=32)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name + ".mp4")
    write_video([render(clip, frames)], path, 8)
    return video_chop.chop(path, segment_frames, os.path.join(folder, "chopped"), caption=clip.prompt)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """28 frames of a moving shape at 32x32 chopped with L=4: depth 3, levels 2 and 3 hold 3 + 9 infill segments."""
    return chopped(str(tmp_path_factory.mktemp("videos")), "shapes", 28, 4)


def settings(model, data, out, **changes):
    values = dict(model=model, data=[data] if isinstance(data, str) else data, out=str(out), steps=30, batch_size=4, lr=1e-2, cfg_dropout=0.0, log_every=100,
                  save_every=0)
    values.update(changes)
    return TrainSettings(**values)


def cli(model, data, out, *extra):
    return ["--model", model, "--data", data, "--out", str(out), "--batch-size", "4", "--lr", "1e-2", "--cfg-dropout", "0",
            "--log-every", "100", "--save-every", "0", *extra]


def randomise(module, seed=1, std=0.05):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def trained(tiny_model_folder, dataset, tmp_path_factory):
    """A 30-step run; the fixed evaluation (every segment, 3 fixed noise and timestep draws) before and after."""
    trainer = Trainer(settings(tiny_model_folder, dataset, tmp_path_factory.mktemp("run")), **QUIET)
    trainer.cache_latents()
    evaluation = [trainer.batch(list(range(len(trainer.segments))), seed) for seed in (101, 102, 103)]
    before = sum(trainer.loss(b) for b in evaluation) / 3
    losses = trainer.run()
    after = sum(trainer.loss(b) for b in evaluation) / 3
    return trainer, before, after, losses


def test_dataset_holds_the_infill_levels(trained):
    trainer = trained[0]
    assert trainer.length == 4 and len(trainer.segments) == 12
    assert [s.level for s in trainer.segments] == [2] * 3 + [3] * 9
    assert set(trainer.captions) == {random_clip(random.Random(0), 28, size=32).prompt}


def test_thirty_steps_lower_the_loss_and_change_only_infinet(trained, tiny_model_folder):
    trainer, before, after, losses = trained
    assert len(losses) == 30
    assert after < 0.97 * before, (before, after)
    fresh = InfiNet.for_unet_config(trainer.unet.config).state_dict()
    assert all(not torch.equal(value, fresh[name]) for name, value in trainer.infinet.state_dict().items())
    untouched = load_text_to_video(tiny_model_folder).denoiser.unet.state_dict()
    assert all(torch.equal(value, untouched[name]) for name, value in trainer.unet.state_dict().items())
    # The saved file is what LongVideoInfiNetLoader reads: the trained InfiNet, condition clean, no base weights.
    (weights,) = LongVideoInfiNetLoader().load("", "auto", infinet_path=os.path.join(trainer.settings.out, "infinet.safetensors"))
    assert weights.condition == "clean" and weights.base_weights is None
    built = weights.build(trainer.unet)
    assert all(torch.equal(value, trainer.infinet.state_dict()[name]) for name, value in built.state_dict().items())


def test_trained_infinet_drives_the_hierarchical_sampler(trained, tiny_model_folder, tmp_path):
    """Level 1 (no known frames, InfiNet skipped) is the same with a zero and a trained InfiNet; the infill differs."""
    trainer = trained[0]
    zero = str(tmp_path / "zero.safetensors")
    save_infinet(zero, InfiNet.for_unet_config(trainer.unet.config), "clean")
    model, clip, _ = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)
    prompts = LongVideoPromptSchedule().encode(clip, "a red circle moving right")[0]
    negative = LongVideoTextEncode().encode(clip, "")[0]
    videos = []
    for path in (os.path.join(trainer.settings.out, "infinet.safetensors"), zero):
        (infinet,) = LongVideoInfiNetLoader().load("", "auto", infinet_path=path)
        (latent,) = LongVideoHierarchicalSampler().sample(model, prompts, negative, "timeline", 32, 32, 4, 2, "learned", 7, 2,
                                                          5.0, "ddim", 8, infinet=infinet)
        videos.append(latent["samples"])
    learned, plain = videos
    assert learned.shape == (1, 4, 10, 4, 4) and torch.isfinite(learned).all()
    keyframes = [0, 3, 6, 9]
    assert torch.equal(learned[:, :, keyframes], plain[:, :, keyframes])
    assert (learned - plain).abs().max() > 1e-3


@pytest.mark.parametrize("condition", ["clean", "noisy"])
def test_training_conditions_exactly_as_sampling_does(tiny_model_folder, dataset, tmp_path, condition):
    """The training loss is the MSE of what the sampler's call (InfiNetDenoiser with the run's endpoints known at 0 and
    L-1) predicts; other known positions would give another loss."""
    trainer = Trainer(settings(tiny_model_folder, dataset, tmp_path, condition=condition), **QUIET)
    randomise(trainer.infinet)
    batch = trainer.batch([0, 5], seed=3)
    noisy = trainer.noise_scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)

    def sampler_loss(indices):
        known = KnownFrames(indices, batch.latents[:, :, indices])
        with torch.no_grad():
            prediction = trainer.denoiser(noisy, batch.timesteps, batch.context, known=known)
        return float(torch.nn.functional.mse_loss(prediction, batch.noise))

    assert trainer.loss(batch) == sampler_loss([0, 3])
    assert trainer.loss(batch) != sampler_loss([0, 1])


def test_prediction_types_give_their_targets():
    from diffusers import DDPMScheduler

    latents, noise = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    timesteps = torch.tensor([10, 900])
    alpha = DDPMScheduler().alphas_cumprod[timesteps].reshape(2, 1, 1, 1, 1)
    velocity = train_infinet.training_target(DDPMScheduler(prediction_type="v_prediction"), latents, noise, timesteps)
    assert torch.allclose(velocity, alpha.sqrt() * noise - (1 - alpha).sqrt() * latents, atol=1e-6)
    assert torch.equal(train_infinet.training_target(DDPMScheduler(), latents, noise, timesteps), noise)


def test_v_prediction_model_trains_on_velocity(tiny_model_folder, dataset, tmp_path):
    config = json.load(open(os.path.join(tiny_model_folder, "scheduler", "scheduler_config.json")))
    trainer = Trainer(settings(tiny_model_folder, dataset, tmp_path), **QUIET)
    trainer.noise_scheduler = train_infinet._noise_scheduler({**config, "prediction_type": "v_prediction"})
    batch = trainer.batch([1, 2], seed=4)
    noisy = trainer.noise_scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)
    with torch.no_grad():
        prediction = trainer.denoiser(noisy, batch.timesteps, batch.context, known=KnownFrames([0, 3], batch.latents[:, :, [0, 3]]))
    velocity = trainer.noise_scheduler.get_velocity(batch.latents, batch.noise, batch.timesteps)
    assert trainer.loss(batch) == float(torch.nn.functional.mse_loss(prediction, velocity))


def test_latents_on_the_fly_match_the_cache(trained, tiny_model_folder, dataset, tmp_path):
    cached = trained[0]
    streaming = Trainer(settings(tiny_model_folder, dataset, tmp_path, latents="on-the-fly"), **QUIET)
    batch = streaming.batch([2, 9], seed=6)
    assert not streaming.latent_cache
    assert torch.equal(batch.latents, cached.batch([2, 9], seed=6).latents)


def test_gradient_checkpointing_recomputes_blocks_with_the_same_gradients(tiny_model_folder, dataset, tmp_path):
    trainer = Trainer(settings(tiny_model_folder, dataset, tmp_path, unfreeze=["temp_convs"]), **QUIET)
    randomise(trainer.infinet)
    batch = trainer.batch([0, 7], seed=5)
    calls = []  # a layer inside the first block runs again in the backward pass when the blocks are checkpointed
    trainer.unet.down_blocks[0].resnets[0].register_forward_pre_hook(lambda *_: calls.append(1))
    gradients = []
    for checkpointing in (False, True):
        trainer.settings.gradient_checkpointing = checkpointing
        calls.clear()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.loss(batch, backward=True)
        gradients.append({name: p.grad.clone() for name, p in trainer.trainable.items()})
        assert len(calls) == (2 if checkpointing else 1)
        assert not any("forward" in vars(block) for block in trainer.unet.down_blocks)
    # (diffusers zero-initialises each temporal conv layer's last conv, so only that one has a gradient at first)
    assert any(name.startswith("unet.") and g.abs().max() > 0 for name, g in gradients[0].items())
    for name, gradient in gradients[0].items():
        assert gradient.abs().max() > 0 or name.startswith("unet."), name
        assert torch.allclose(gradients[1][name], gradient, rtol=1e-4, atol=1e-7), name


def test_unfrozen_layers_train_and_are_saved(tiny_model_folder, dataset, tmp_path):
    trainer = train_infinet.main(cli(tiny_model_folder, dataset, tmp_path / "run", "--steps", "3", "--unfreeze", "temp_convs"))
    untouched = load_text_to_video(tiny_model_folder).denoiser.unet.state_dict()
    named = {n for n in untouched if "temp_convs" in n and n.endswith(("weight", "bias"))}
    named &= dict(trainer.unet.named_parameters()).keys()
    assert named and set(trainer.unfrozen) == named
    for name, value in trainer.unet.state_dict().items():
        assert torch.equal(value, untouched[name]) == (name not in named), name
    weights = load_infinet(str(tmp_path / "run" / "infinet.safetensors"))
    assert set(weights.base_weights) == named
    model = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)[0]
    denoiser = InfiNetDenoiser.from_weights(model, weights)
    assert all(torch.equal(denoiser.base.unet.state_dict()[n], trainer.unet.state_dict()[n]) for n in named)
    # Training on from that file (InfiNet only) starts from its InfiNet and base weights and keeps the latter.
    again = Trainer(settings(tiny_model_folder, dataset, tmp_path / "again", steps=1, init=str(tmp_path / "run" / "infinet.safetensors")), **QUIET)
    assert all(torch.equal(again.infinet.state_dict()[k], v) for k, v in trainer.infinet.state_dict().items())
    assert all(torch.equal(again.unet.state_dict()[n], trainer.unet.state_dict()[n]) for n in named)
    again.run()
    assert set(load_infinet(str(tmp_path / "again" / "infinet.safetensors")).base_weights) == named


def test_resumed_run_matches_an_uninterrupted_one(tiny_model_folder, dataset, tmp_path):
    whole = train_infinet.main(cli(tiny_model_folder, dataset, tmp_path / "whole", "--steps", "6", "--unfreeze", "temp_attentions",
                                   "--warmup-steps", "4", "--cfg-dropout", "0.3"))
    train_infinet.main(cli(tiny_model_folder, dataset, tmp_path / "split", "--steps", "3", "--unfreeze", "temp_attentions",
                           "--warmup-steps", "4", "--cfg-dropout", "0.3"))
    resumed = train_infinet.main(["--out", str(tmp_path / "split"), "--resume", "--steps", "6"])
    assert resumed.step == whole.step == 6
    for name in ("training_state.safetensors", "infinet.safetensors"):
        expected, got = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "split" / name))
        assert expected.keys() == got.keys() and any(k.startswith("optimizer/") for k in got) == (name.startswith("training"))
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    state = json.load(open(tmp_path / "split" / "training_state.json"))
    assert state["step"] == 6 and state["settings"]["unfreeze"] == ["temp_attentions"]


def test_resume_keeps_the_run_settings(tiny_model_folder, dataset, tmp_path):
    train_infinet.main(cli(tiny_model_folder, dataset, tmp_path / "run", "--steps", "1"))
    with pytest.raises(SystemExit, match="already holds a training run: add --resume"):
        train_infinet.main(cli(tiny_model_folder, dataset, tmp_path / "run", "--steps", "2"))
    with pytest.raises(SystemExit, match=r"--lr 0\.5 differs from the run's 0\.01"):
        train_infinet.main(["--out", str(tmp_path / "run"), "--resume", "--lr", "0.5"])
    with pytest.raises(SystemExit, match="holds no training_state.json"):
        train_infinet.main(["--out", str(tmp_path / "elsewhere"), "--resume"])


def test_clear_errors(tiny_model_folder, dataset, tmp_path):
    def error(match, out=tmp_path / "run", data=dataset, **changes):
        with pytest.raises(train_infinet.TrainError, match=match):
            Trainer(settings(tiny_model_folder, data, out, **changes), **QUIET).run()

    error("no index.json there or in its subfolders", data=str(tmp_path))
    other = chopped(str(tmp_path / "other"), "other", 17, 5, seed=1)
    error("has L=5 but .* has L=4: .* same --L", data=[dataset, other])
    short = chopped(str(tmp_path / "short"), "short", 4, 4, seed=2)
    error("holds no segments of level 2 or deeper", data=short)
    error("level 1 holds the keyframes", levels=[1, 2])
    error("--unfreeze 'transformer_xyz' matches no UNet parameter", unfreeze=["transformer_xyz"])
    error("fp16 needs a CUDA GPU", mixed_precision="fp16")
    broken = chopped(str(tmp_path / "broken"), "broken", 10, 4, seed=3)
    clip = json.load(open(os.path.join(broken, "index.json")))["levels"][1]["segments"][0]["clip"]
    write_video([render(random_clip(random.Random(4), 3, size=32), 3)], os.path.join(broken, clip), 8)
    error("has 3 frames but its index says L=4", data=broken)
    os.remove(os.path.join(broken, "index.json"))
    with pytest.raises(SystemExit, match="train_infinet: --data .* no index.json"):
        train_infinet.main(cli(tiny_model_folder, broken, tmp_path / "run2"))
