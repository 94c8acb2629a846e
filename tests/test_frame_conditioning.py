import pytest
import torch

from longvideo.models.denoiser import Denoiser
from longvideo.nodes.loaders import LongVideoModelLoader
from longvideo.sampling.denoise import TextGuidance, denoise, renoise
from longvideo.sampling.frame_conditioning import (
    METHODS, BlendConditioning, FrameConditioning, GuidanceConditioning, KnownFrames, LearnedConditioning,
    ReplaceConditioning, ResampleConditioning, blend_along_time,
)
from longvideo.sampling.schedulers import SCHEDULER_NAMES, make_scheduler

SHAPE = (1, 4, 8, 4, 4)


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    model, clip, _ = LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)
    positive, _ = clip.encode(["a red circle moving right"])
    negative, _ = clip.encode([""])
    return model, TextGuidance(positive, negative, 7.5)


def known(indices, seed=0, batch=1):
    return KnownFrames(list(indices), torch.randn((batch, 4, len(indices), 4, 4), generator=torch.Generator().manual_seed(seed)))


def run(tiny, conditioning=None, scheduler="ddim", steps=6, seed=3, shape=SHAPE):
    model, guidance = tiny
    return denoise(model, guidance, shape, steps=steps, seed=seed, scheduler=scheduler, conditioning=conditioning)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_replace_keeps_known_frames_bit_exact(tiny, scheduler):
    frames = known([0, 3, 7])
    out = run(tiny, ReplaceConditioning(frames), scheduler=scheduler)
    assert torch.equal(out[:, :, [0, 3, 7]], frames.latents)
    assert torch.isfinite(out).all()


def test_conditioning_changes_the_unknown_frames(tiny):
    plain = run(tiny)
    conditioned = run(tiny, ReplaceConditioning(known([0, 1])))
    assert not torch.equal(plain[:, :, 2:], conditioned[:, :, 2:])


def test_no_known_frames_is_the_plain_loop(tiny):
    assert torch.equal(run(tiny, FrameConditioning(known([0]))), run(tiny))


def test_replace_renoises_known_frames_to_the_current_level(tiny, monkeypatch):
    """What the model sees at each step, on the known frames, is add_noise(known, fixed noise, t)."""
    model, _ = tiny
    seen = []
    call = type(model).__call__

    def spy(self, latents, timestep, context):
        seen.append((latents[:1, :, [2]].clone(), timestep))
        return call(self, latents, timestep, context)

    monkeypatch.setattr(type(model), "__call__", spy)
    frames = known([2])
    conditioning = ReplaceConditioning(frames)
    run(tiny, conditioning, steps=4)
    for model_input, timestep in seen:
        expected = conditioning.sampler.add_noise(frames.latents, conditioning.noise, timestep.reshape(1))
        assert torch.equal(model_input, expected)


def test_batched_known_frames(tiny):
    frames = known([5], batch=2)
    out = run(tiny, ReplaceConditioning(frames), shape=(2, 4, 8, 4, 4))
    assert torch.equal(out[:, :, [5]], frames.latents)


def test_guidance_pulls_known_frames_towards_their_latents(tiny):
    frames = known([0, 1])
    plain = run(tiny, steps=8)
    guided = run(tiny, GuidanceConditioning(frames, weight=1.0), steps=8)
    error = lambda out: (out[:, :, [0, 1]] - frames.latents).pow(2).mean().item()
    assert error(guided) < 0.01 * error(plain)


@pytest.mark.parametrize(("indices", "message"), [([8], "outside the 8 sampled frames"), ([1, 1], "repeat")])
def test_bad_known_frames_are_rejected(tiny, indices, message):
    frames = KnownFrames(indices, torch.zeros(1, 4, len(indices), 4, 4))
    with pytest.raises(ValueError, match=message):
        run(tiny, ReplaceConditioning(frames))


def test_known_latents_of_the_wrong_size_are_rejected(tiny):
    with pytest.raises(ValueError, match="known latents have shape"):
        run(tiny, ReplaceConditioning(KnownFrames([0], torch.zeros(1, 4, 1, 8, 8))))


def test_learned_method_hands_the_known_frames_to_the_model_and_keeps_them_exact():
    """A model that takes known frames receives them (clean, batched like the CFG input) at every call."""
    class RecordingDenoiser(Denoiser):
        latent_channels = 4
        scheduler_config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                            "beta_end": 0.012, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
        takes_known_frames = True

        def __init__(self):
            self.seen = []

        def load(self):
            return torch.device("cpu")

        def __call__(self, latents, timestep, context, known=None):
            self.seen.append((latents.shape[0], known.indices, known.latents.clone()))
            return torch.zeros_like(latents) + known.latents.mean()

    clean = torch.randn(1, 4, 2, 8, 8)
    denoiser = RecordingDenoiser()
    known = KnownFrames([0, 5], clean)
    guidance = TextGuidance(torch.randn(1, 3, 32), torch.randn(1, 3, 32), cfg=5.0)
    out = denoise(denoiser, guidance, (1, 4, 6, 8, 8), steps=3, seed=1, conditioning=METHODS["learned"](known))
    assert len(denoiser.seen) == 3
    for batch, indices, latents in denoiser.seen:
        assert batch == 2 and indices == [0, 5]
        assert torch.equal(latents, torch.cat([clean, clean]))
    assert torch.equal(out[:, :, [0, 5]], clean)


# --- frame guidance: learned with a guidance scale of the known frames' own --------------------------------------------


class AdditiveDenoiser(Denoiser):
    """Predicts a text term plus a frame term (the means of the context and of the known latents), so that every
    guidance combination has an exact expected value. Counts the batch items it is run on."""

    latent_channels = 4
    scheduler_config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                        "beta_end": 0.012, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    takes_known_frames = True

    def __init__(self):
        self.items = 0

    def load(self):
        return torch.device("cpu")

    def __call__(self, latents, timestep, context, known=None):
        self.items += latents.shape[0]
        text = context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return torch.zeros_like(latents) + text + (0.0 if known is None else known.latents.mean())


class RecordedLearned(LearnedConditioning):
    def model_step(self, predict, latents, timestep):
        latents, prediction = super().model_step(predict, latents, timestep)
        self.predictions.append(prediction)
        return latents, prediction


@pytest.mark.parametrize(("scale", "cfg", "items_per_step"), [
    (1.0, 5.0, 2),   # off: both CFG halves see the known frames
    (2.5, 5.0, 3),   # the negative text once more, without them
    (5.0, 5.0, 2),   # equal to the CFG: the negative text with known frames drops out
    (0.0, 5.0, 3),
    (3.0, 1.0, 2),   # no CFG: the positive text with and without them
])
def test_frame_guidance_scales_the_known_frames_own_direction(scale, cfg, items_per_step):
    """e(u, 0) + scale * (e(u, F) - e(u, 0)) + cfg * (e(c, F) - e(u, F)), u the negative text (the positive without CFG)."""
    positive, negative, clean = torch.randn(1, 3, 32), torch.randn(1, 3, 32), torch.randn(1, 4, 2, 8, 8)
    denoiser = AdditiveDenoiser()
    conditioning = RecordedLearned(KnownFrames([0, 5], clean), frame_guidance=scale)
    conditioning.predictions = []
    guidance = TextGuidance(positive, negative if cfg > 1 else None, cfg=cfg)
    out = denoise(denoiser, guidance, (1, 4, 6, 8, 8), steps=3, seed=1, conditioning=conditioning)
    text = negative.mean() + cfg * (positive.mean() - negative.mean()) if cfg > 1 else positive.mean()
    expected = text + scale * clean.mean()
    assert len(conditioning.predictions) == 3
    for prediction in conditioning.predictions:
        torch.testing.assert_close(prediction, torch.full_like(prediction, float(expected)))
    assert denoiser.items == 3 * items_per_step
    assert torch.equal(out[:, :, [0, 5]], clean)


# --- resample (RePaint's resampling on top of replace) -----------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_resample_keeps_known_frames_exact_with_every_scheduler(tiny, scheduler):
    frames = known([0, 1])
    out = run(tiny, ResampleConditioning(frames, passes=2, until=0.5), scheduler=scheduler)
    assert torch.equal(out[:, :, [0, 1]], frames.latents) and torch.isfinite(out).all()
    assert not torch.equal(out, run(tiny, ReplaceConditioning(frames), scheduler=scheduler))


def test_resample_without_passes_is_replace(tiny):
    frames = known([0, 5])
    for scheduler in ("dpmpp_2m", "euler_ancestral"):
        assert torch.equal(run(tiny, ResampleConditioning(frames, passes=0), scheduler=scheduler),
                           run(tiny, ReplaceConditioning(frames), scheduler=scheduler))


@pytest.fixture
def model_timesteps(tiny, monkeypatch):
    """The timestep of every model call, in order."""
    model, timesteps = tiny[0], []
    call = type(model).__call__

    def spy(self, latents, timestep, context):
        timesteps.append(int(timestep))
        return call(self, latents, timestep, context)

    monkeypatch.setattr(type(model), "__call__", spy)
    return timesteps


def test_resample_repeats_the_noisier_steps_only(tiny, model_timesteps):
    timesteps = model_timesteps
    run(tiny, ResampleConditioning(known([0]), passes=2, until=0.5), steps=6)
    distinct = sorted(set(timesteps), reverse=True)
    assert [timesteps.count(t) for t in distinct] == [3, 3, 3, 1, 1, 1]
    assert len(timesteps) == 6 + 2 * 3


def test_renoising_goes_back_to_the_noisier_level(tiny):
    """q(x_s | x_t): a clean signal re-noised from t to s has the noise level of s, for VP and Euler samples alike."""
    for scheduler in ("ddim", "euler"):
        sampler = make_scheduler(scheduler, tiny[0].scheduler_config)
        sampler.set_timesteps(10)
        t, s = sampler.timesteps[6], sampler.timesteps[2]
        clean = torch.zeros(4000, 4, 1, 4, 4)
        at_t = sampler.add_noise(clean, torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)), t.reshape(1))
        back = renoise(sampler, at_t, t, s, torch.Generator().manual_seed(1))
        expected = sampler.add_noise(clean, torch.randn(clean.shape, generator=torch.Generator().manual_seed(2)), s.reshape(1))
        assert back.std().item() == pytest.approx(expected.std().item(), rel=0.01)
        assert torch.equal(renoise(sampler, at_t, t, t, torch.Generator().manual_seed(1)), at_t)


def test_resample_settings_are_checked():
    with pytest.raises(ValueError, match="passes"):
        ResampleConditioning(known([0]), passes=-1)
    with pytest.raises(ValueError, match="share"):
        ResampleConditioning(known([0]), until=1.5)
    assert "resample" in METHODS


# --- blend (SDEdit from the known frames mixed along time) --------------------------------------------------------------


def test_blend_mixes_the_nearest_known_frames_along_time():
    latents = torch.stack([torch.full((1, 2, 2), 0.0), torch.full((1, 2, 2), 4.0)], dim=1).unsqueeze(0)  # [1, 1, 2, 2, 2]
    blended = blend_along_time(KnownFrames([1, 5], latents), (1, 1, 7, 2, 2))
    assert blended[0, 0, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0]


def test_blend_keeps_known_frames_exact_and_runs_the_last_share_of_the_steps(tiny, model_timesteps):
    calls = model_timesteps
    frames = known([0, 7])
    out = run(tiny, BlendConditioning(frames, strength=0.5), steps=6)
    assert torch.equal(out[:, :, [0, 7]], frames.latents) and torch.isfinite(out).all()
    assert len(calls) == 3 and max(calls) < 600


def test_blend_is_refused_where_known_frames_are_on_one_side_only():
    from longvideo.sampling.continuation import ContinuationSettings

    with pytest.raises(ValueError, match="blend"):
        ContinuationSettings(16, 2, 1, 1, "blend").check()
    with pytest.raises(ValueError, match="strength"):
        BlendConditioning(known([0]), strength=0.0)
