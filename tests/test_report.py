"""LongVideoReport and LongVideoColourMatch, and the joins the samplers report.

Synthetic videos with known injected drift (a linear colour shift, brightness steps at given joins, a jump in
position) must give those values back within the tolerances stated beside each test; colour matching must bring an
injected shift under Delta E 1 without moving an undrifted video; the report on a continuation video of the embedded
model must find the sampler's joins and agree with bench/quality.py's seam ratio within 15%; bad input gets a clear
error."""

import json
import os

import numpy as np
import pytest
import torch

from longvideo.models.comfy_model import LatentLayout
from longvideo.nodes.common import LATENT_INFO, NodeInputError
from longvideo.nodes.joins import beside, continuation_joins, latent_joins, pixel_index, window_joins, with_joins
from longvideo.nodes.report import LongVideoColourMatch, LongVideoReport
from longvideo.utils.colour_match import METHODS, MatchSettings, delta_e_2000, lab_to_rgb, match_colours, rgb_to_lab
from longvideo.utils.video_io import load_latent_file, reserve_output_path, save_latent_file
from longvideo.utils.video_report import draw_report, measure_frames, pieces, summarise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------
# synthetic videos


def texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour field in mid tones (0.2..0.8: shifts of a few L*a*b* units stay in gamut) that repeats every
    `size` pixels each way, so that panning it keeps exactly the same colours in the frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.full((size, size, 3), 0.5, np.float32)
    for channel in range(3):
        for _ in range(6):
            fx, fy = rng.integers(-6, 7, 2)
            field[..., channel] += 0.05 * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    return np.clip(field, 0, 1)


def still(frames: int, size: int = 64) -> np.ndarray:
    return np.repeat(texture(size)[None], frames, axis=0)


def pan(frames: int, size: int = 64, speed: int = 1, jumps: dict | None = None) -> np.ndarray:
    """The texture moving left `speed` px a frame, with jumps[t] px more at the step t - 1 -> t (every frame holds the
    same colours)."""
    jumps, scene = jumps or {}, texture(size, seed=1)
    x, out = 0, []
    for t in range(frames):
        x += (speed + jumps.get(t, 0)) if t else 0
        out.append(np.roll(scene, -x, axis=1))
    return np.stack(out)


def shifted(frames: np.ndarray, lab_shift) -> np.ndarray:
    return lab_to_rgb(rgb_to_lab(frames) + np.asarray(lab_shift, np.float32))


def chunk_shifted(frames: np.ndarray, joins: list[int], per_chunk) -> np.ndarray:
    """Chunk c (cut at `joins`) shifted by c x per_chunk in CIELAB."""
    out, starts = frames.copy(), [0] + joins + [len(frames)]
    for c, (first, stop) in enumerate(zip(starts, starts[1:])):
        out[first:stop] = shifted(frames[first:stop], np.asarray(per_chunk, np.float32) * c)
    return out


def report_of(frames: np.ndarray, joins: list[int]) -> dict:
    return summarise(measure_frames([frames[i : i + 16] for i in range(0, len(frames), 16)]), joins)


def mean_lab(frames) -> np.ndarray:
    return rgb_to_lab(np.asarray(frames)).reshape(len(frames), -1, 3).mean(1)


# ---------------------------------------------------------------------------------------------------
# colour science


def test_delta_e_2000_matches_sharma_wu_dalal():
    """Pairs 1, 7, 17, 25, 13 and 34 of Sharma, Wu and Dalal (2005), Table 1, to their 4 printed decimals."""
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, 0, 0), (50, -1, 2), 2.3669),
             ((50, 2.5, 0), (73, 25, -18), 27.1492), ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
             ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792), ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082)]
    got = delta_e_2000(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    np.testing.assert_allclose(got, [p[2] for p in pairs], atol=1e-4)
    assert delta_e_2000((40, 10, -5), (40, 10, -5)) == 0


def test_lab_round_trip_and_srgb_red():
    """OpenCV's float CIELAB (its tables, D65): sRGB red to 0.02, and there and back within 0.0025 (under a level of
    8-bit colour)."""
    np.testing.assert_allclose(rgb_to_lab(np.array([[1.0, 0.0, 0.0]])), [[53.24, 80.09, 67.20]], atol=0.02)
    frames = texture(16, 16)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(frames)), frames, atol=2.5e-3)


# ---------------------------------------------------------------------------------------------------
# the report gives injected drift back


def test_linear_colour_shift_comes_back_as_drift():
    """a* rising 0.1 a frame over 60 frames of a still scene: the a* drift (last 15% against the first 15%, 9 frames
    each) is 0.1 x 51 = 5.1, within 0.15; the colour drift is the Delta E 2000 of that shift within 0.15; brightness
    does not move (within 0.1)."""
    frames = still(60)
    drifted = np.stack([shifted(frame, (0.0, 0.1 * t, 0.0)) for t, frame in enumerate(frames)])
    report = report_of(drifted, [])
    assert report["drift"]["a"] == pytest.approx(5.1, abs=0.15)
    base = mean_lab(frames[:1])[0]
    expected = delta_e_2000(base + [0.0, 0.4, 0.0], base + [0.0, 5.5, 0.0])  # a* + 0.1 t over frames 0-8 and 51-59
    assert report["drift"]["colour_delta_e"] == pytest.approx(float(expected), abs=0.15)
    assert report["drift"]["brightness"] < 0.1 and report["drift"]["b"] < 0.15
    assert report["summary"]["jumps"] == [] and report["summary"]["interior_motion_px"] < 0.05


def test_brightness_steps_at_given_joins_come_back_per_join_and_per_chunk():
    """L* + 3 at frames 20 and 40 of a still scene: each join's brightness step is 3 within 0.15, each chunk is 3
    brighter than the one before within 0.15, and frame steps inside the chunks change no colour (Delta E < 0.05)."""
    frames = chunk_shifted(still(60), [20, 40], (3.0, 0.0, 0.0))
    report = report_of(frames, [20, 40])
    assert report["joins"] == [20, 40]
    assert [j["brightness_step"] for j in report["at_joins"]] == [pytest.approx(3.0, abs=0.15)] * 2
    brightness = [s["brightness"] for s in report["segments"]]
    assert np.diff(brightness) == pytest.approx([3.0, 3.0], abs=0.15)
    assert report["summary"]["colour_step_interior"] < 0.05
    assert report["summary"]["colour_step_at_joins"] > 1.5
    assert report["drift"]["brightness"] == pytest.approx(6.0, abs=0.3)
    assert report["segments"][0]["delta_e_to_first"] == 0


@pytest.mark.parametrize("size", [64, 128])
def test_a_jump_in_position_comes_back_as_the_seam_step(size):
    """A scene panning 1 px a frame that jumps 5 px more at frame 30: the step there measures 6 px within 10%, the
    interior steps 1 px within 5%, so the seam ratio at that join is 6 within 15%; a join where nothing jumps (20)
    measures 1 within 10%. At 64x64 the jump is also listed as a jump (3 x the median + 3% of the short side)."""
    report = report_of(pan(40, size, 1, {30: 5}), [20, 30])
    steps = {j["frame"]: j for j in report["at_joins"]}
    assert steps[30]["motion_px"] == pytest.approx(6.0, rel=0.10)
    assert report["summary"]["interior_motion_px"] == pytest.approx(1.0, rel=0.05)
    assert steps[30]["seam_ratio"] == pytest.approx(6.0, rel=0.15)
    assert steps[20]["seam_ratio"] == pytest.approx(1.0, rel=0.10)
    assert report["summary"]["seam_ratio"] == pytest.approx(3.5, rel=0.15)
    if size == 64:
        assert report["summary"]["jumps"] == [30]


def test_batches_do_not_change_the_figures():
    frames = chunk_shifted(pan(30), [12], (2.0, 1.0, 0.0))
    whole = summarise(measure_frames([frames]), [12])
    batched = summarise(measure_frames([frames[i : i + 7] for i in range(0, 30, 7)]), [12])
    assert whole == batched


def test_pieces_put_a_lone_keyframe_with_the_frames_after_it():
    assert pieces(10, [4, 7]) == [(0, 4), (4, 7), (7, 10)]
    # interpolation x4 over 9 frames: keyframes 0, 4, 8 and the steps beside them
    assert pieces(9, beside([0, 4, 8], 9)) == [(0, 4), (4, 8), (8, 9)]


def test_plot_shows_every_figure_and_stays_readable():
    report = report_of(pan(30, 64, 1, {15: 4}), [15])
    plot = draw_report(report)
    assert plot.dtype == np.uint8 and plot.shape[1] == 960 and plot.shape[0] >= 600
    # the join line (brown), the steps across the join (orange dots) and the jump (a red dot) are drawn
    brown = (np.abs(plot.astype(int) - (125, 88, 45)).sum(-1) < 20).sum()
    orange = (np.abs(plot.astype(int) - (255, 160, 40)).sum(-1) < 40).sum()
    red = (np.abs(plot.astype(int) - (255, 70, 70)).sum(-1) < 40).sum()
    assert brown > 600 and orange > 40 and red > 20


# ---------------------------------------------------------------------------------------------------
# colour matching


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reference", ["first_chunk", "carried_frames"])
def test_colour_match_takes_an_injected_shift_under_delta_e_1(method, reference):
    """Chunks of a panning scene shifted by 0, (2, 3, -2), (4, 6, -4) in CIELAB (Delta E up to about 8): after matching,
    every frame's mean colour is within Delta E 1 of the undrifted frame's."""
    clean = pan(48)
    drifted = chunk_shifted(clean, [16, 32], (2.0, 3.0, -2.0))
    assert delta_e_2000(mean_lab(drifted), mean_lab(clean)).max() > 5
    fixed = drifted.copy()
    done = match_colours(fixed, [16, 32], MatchSettings(method, reference))
    assert delta_e_2000(mean_lab(fixed), mean_lab(clean)).max() < 1.0
    assert [c["first"] for c in done["chunks"]] == [0, 16, 32]
    assert all(c["delta_e_after"] < 1.0 < c["delta_e_before"] for c in done["chunks"][1:])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reference", ["first_chunk", "carried_frames"])
def test_colour_match_leaves_an_undrifted_video_alone(method, reference):
    """No frame's mean colour moves by Delta E 0.5 or more, and pixels move by less than one level (0..255) on average."""
    clean = pan(48)
    fixed = clean.copy()
    match_colours(fixed, [16, 32], MatchSettings(method, reference))
    assert delta_e_2000(mean_lab(fixed), mean_lab(clean)).max() < 0.5
    assert np.abs(fixed - clean).mean() * 255 < 1.0


def test_easing_spreads_the_step_a_correction_would_make():
    """A slow colour ramp (a* + 0.15 a frame) with no step at its joins: matching each chunk to the first moves each
    chunk by its own offset, a step of about Delta E 3 at every join. Eased over 6 frames, no join steps by Delta E
    0.5 (the ramp's own step between frames is 0.24)."""
    frames = still(48)
    ramp = np.stack([shifted(frame, (0.0, 0.15 * t, 0.0)) for t, frame in enumerate(frames)])

    def largest_join_step(ease):
        fixed = ramp.copy()
        match_colours(fixed, [16, 32], MatchSettings("lab", "first_chunk", 1.0, ease))
        lab = mean_lab(fixed)
        return max(float(delta_e_2000(lab[j - 1], lab[j])) for j in (16, 32))

    abrupt, eased = largest_join_step(0), largest_join_step(6)
    assert abrupt > 2 and eased < 0.5


def test_colour_match_streams_in_batches():
    drifted = chunk_shifted(pan(40), [13, 27], (1.5, -2.0, 2.5))
    small, whole = drifted.copy(), drifted.copy()
    match_colours(small, [13, 27], MatchSettings("histogram", "carried_frames"), frames_per_batch=5)
    match_colours(whole, [13, 27], MatchSettings("histogram", "carried_frames"), frames_per_batch=100)
    np.testing.assert_allclose(small, whole, atol=1e-6)


def test_strength_scales_the_correction():
    drifted = chunk_shifted(pan(32), [16], (0.0, 4.0, 0.0))
    half = drifted.copy()
    match_colours(half, [16], MatchSettings("lab", "first_chunk", 0.5, 0))
    moved = mean_lab(half)[16:, 1] - mean_lab(drifted)[16:, 1]
    assert moved.mean() == pytest.approx(-2.0, abs=0.2)


# ---------------------------------------------------------------------------------------------------
# the nodes


class FakeVideoVAE:
    """A causal video VAE (4 pixel frames per latent frame after the first), decoding a fixed video batch by batch."""

    latent_channels, downscale = 4, 8

    def __init__(self, frames: np.ndarray, temporal: int = 4):
        self.frames, self.layout = frames, LatentLayout(4, 8, temporal)
        self.decoded = []

    def pixel_frames(self, latent_frames):
        return self.layout.pixel_frames(latent_frames)

    def decode_batches(self, latents, frames_per_batch):
        total = self.pixel_frames(latents.shape[2])
        for start in range(0, total, frames_per_batch):
            self.decoded.append(min(frames_per_batch, total - start))
            yield torch.from_numpy(self.frames[start : start + frames_per_batch])


def causal_latent(latent_frames, joins, carried=None):
    return with_joins({"samples": torch.zeros(1, 4, latent_frames, 8, 8)}, joins, carried=carried)


def test_report_node_reads_the_samplers_joins_in_pixel_frames_and_saves_plot_and_numbers(tmp_path):
    """Latent joins 4 and 8 of a Wan-like VAE (4x) are pixel frames 13 and 29; decoding goes batch by batch."""
    latent = causal_latent(11, [4, 8], carried=[2, 2])
    video = chunk_shifted(pan(41), [13, 29], (2.0, 0.0, 0.0))
    vae = FakeVideoVAE(video)
    result = LongVideoReport().report("LongVideo/test_report", True, "", 8, samples=latent, vae=vae)
    plot, text = result["result"]
    report = json.loads(text)
    assert report["joins"] == [13, 29] and report["joins_from"] == "sampler" and report["frames"] == 41
    assert vae.decoded == [8, 8, 8, 8, 8, 1]
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and 0 <= float(plot.min()) and float(plot.max()) <= 1
    entry = result["ui"]["images"][0]
    folder = tmp_path / "output" / entry["subfolder"]
    assert entry["type"] == "output" and (folder / entry["filename"]).is_file()
    saved = json.loads((folder / entry["filename"].replace(".png", ".json")).read_text())
    assert saved == report
    # the same frames as an IMAGE with the LATENT for its joins: the same numbers
    again = LongVideoReport().report("x", False, "", 16, images=torch.from_numpy(video), samples=latent)
    assert isinstance(again, tuple) and json.loads(again[1]) == report


def test_typed_joins_win_over_the_samplers():
    video = torch.from_numpy(pan(20))
    _, text = LongVideoReport().report("x", False, "5, 10", 16, images=video, samples=causal_latent(20, [7]))
    assert json.loads(text)["joins"] == [5, 10] and json.loads(text)["joins_from"] == "input"
    _, text = LongVideoReport().report("x", False, "every 6", 16, images=video)
    assert json.loads(text)["joins"] == [6, 12, 18]
    _, text = LongVideoReport().report("x", False, "none", 16, images=video, samples=causal_latent(20, [7]))
    assert json.loads(text)["joins"] == [] and json.loads(text)["summary"]["seam_ratio"] is None


def test_colour_match_node_uses_the_carried_frames_in_pixel_frames():
    latent = causal_latent(11, [4, 8], carried=[2, 3])
    clean = pan(41)
    drifted = chunk_shifted(clean, [13, 29], (0.0, 3.0, 3.0))
    (fixed,) = LongVideoColourMatch().match("mkl", "carried_frames", 1.0, 0, "", 8, samples=latent, vae=FakeVideoVAE(drifted))
    assert fixed.shape == (41, 64, 64, 3)
    assert delta_e_2000(mean_lab(fixed.numpy()), mean_lab(clean)).max() < 1.0
    images = torch.from_numpy(drifted)
    (again,) = LongVideoColourMatch().match("mkl", "carried_frames", 1.0, 0, "", 8, images=images, samples=latent)
    torch.testing.assert_close(again, fixed)
    assert torch.equal(images, torch.from_numpy(drifted))  # the input IMAGE is not changed


BAD_INPUTS = [
    (dict(images=torch.rand(1, 16, 16, 3)), "1 frame"),
    (dict(images=torch.rand(10, 16, 16, 3), joins="4, 12"), "outside the video's frames"),
    (dict(images=torch.rand(10, 16, 16, 3), joins="6, 3"), "rise frame after frame"),
    (dict(images=torch.rand(10, 16, 16, 3), joins="four"), "frame numbers"),
    (dict(images=torch.full((6, 16, 16, 3), float("nan"))), "NaN"),
    (dict(samples={"samples": torch.full((1, 4, 3, 8, 8), float("nan"))}, vae=FakeVideoVAE(np.zeros((9, 64, 64, 3), np.float32))), "NaN"),
    (dict(images=torch.rand(12, 16, 16, 3), samples=causal_latent(7, [3])), "12 frames, which no VAE makes"),
    (dict(samples={"samples": torch.zeros(1, 4, 9, 8, 8), LATENT_INFO: {"joins": [4], "latent_frames": 7}},
          vae=FakeVideoVAE(np.zeros((33, 64, 64, 3), np.float32))), "made for 7 latent frames"),
    (dict(samples={"samples": torch.zeros(1, 4, 3, 8, 8)}), "needs 'vae'"),
    (dict(), "connect 'images'"),
]


@pytest.mark.parametrize("node", [LongVideoReport, LongVideoColourMatch])
@pytest.mark.parametrize("inputs, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_a_clear_error(node, inputs, message):
    inputs = dict(inputs)
    joins = inputs.pop("joins", "")
    with pytest.raises(NodeInputError, match=message) as error:
        if node is LongVideoReport:
            node().report("x", False, joins, 16, **inputs)
        else:
            node().match("lab", "first_chunk", 1.0, 6, joins or ("" if "samples" in inputs else "every 4"), 16, **inputs)
    assert str(error.value).startswith(node.__name__)


def test_colour_match_without_joins_says_where_to_get_them():
    with pytest.raises(NodeInputError, match="no joins"):
        LongVideoColourMatch().match("mkl", "first_chunk", 1.0, 6, "", 16, images=torch.rand(8, 16, 16, 3))


def test_report_refuses_an_output_prefix_outside_the_output_folder():
    assert LongVideoReport.VALIDATE_INPUTS("../outside") is not True
    with pytest.raises(NodeInputError, match="LongVideoReport"):
        LongVideoReport().report("../outside", True, "", 16, images=torch.rand(4, 16, 16, 3))


# ---------------------------------------------------------------------------------------------------
# the samplers' joins


def test_join_arithmetic():
    assert continuation_joins([0, 2, 3, 2], 8, 0) == ([8, 14, 19], [2, 3, 2])
    assert continuation_joins([1, 2], 8, 1) == ([1, 8], [1, 2])  # from an image: it is frame 0
    assert window_joins(24, 16, 8) == [8, 16]
    assert beside([0, 4, 8], 9) == [1, 4, 5, 8]
    assert [pixel_index(t, 4) for t in (0, 1, 2, 5)] == [0, 1, 5, 17]


def test_joins_merge_into_the_facts_a_latent_has_and_survive_a_latent_file(tmp_path):
    latent = {"samples": torch.zeros(1, 4, 20, 2, 2), LATENT_INFO: {"resume": {"chunk": 3}}}
    start = with_joins({"samples": torch.zeros(1, 4, 8, 2, 2)}, [5], carried=[1])
    with_joins(latent, [8, 14], carried=[2, 2], start_latent=start)
    assert latent[LATENT_INFO] == {"resume": {"chunk": 3}, "joins": [5, 8, 14], "keyframes": [], "latent_frames": 20,
                                   "carried": [1, 2, 2]}
    with reserve_output_path(str(tmp_path), "kept", "latent") as reservation:
        path = save_latent_file(latent["samples"], reservation, latent[LATENT_INFO])
    samples, info = load_latent_file(path)
    assert latent_joins({"samples": samples, LATENT_INFO: info})["joins"] == [5, 8, 14]
    # cut by another node: the joins no longer apply
    assert latent_joins({"samples": torch.zeros(1, 4, 12, 2, 2), LATENT_INFO: info}) is None


@pytest.fixture(scope="module")
def tiny(tiny_model_folder):
    from longvideo.nodes.loaders import LongVideoModelLoader

    return LongVideoModelLoader().load(model="", dtype="fp32", model_path=tiny_model_folder)


def text(tiny, words="a red circle"):
    from longvideo.nodes.conditioning import LongVideoTextEncode

    return LongVideoTextEncode().encode(tiny[1], words)[0]


def test_every_long_sampler_says_where_its_joins_are(tiny):
    from longvideo import NODE_CLASS_MAPPINGS as nodes
    from longvideo.sampling.continuation import ContinuationSettings, known_frame_counts

    model = tiny[0]
    positive, negative = text(tiny), text(tiny, "")
    common = dict(seed=3, steps=1, cfg=5.0, scheduler="ddim")

    (latent,) = nodes["LongVideoContinuationSampler"]().sample(
        model, positive, negative, 32, 32, 6, 4, 1, 3, "replace", **common,
        start_latent=with_joins({"samples": torch.randn(1, 4, 5, 4, 4)}, [2], carried=[1]))
    counts = known_frame_counts(ContinuationSettings(6, 4, 1, 3), 3, 5)
    joins, carried = continuation_joins(counts, 6, 5)
    assert latent[LATENT_INFO]["joins"] == [2] + joins and joins[0] == 5
    assert latent[LATENT_INFO]["carried"] == [1] + carried and latent[LATENT_INFO]["latent_frames"] == latent["samples"].shape[2]

    (latent,) = nodes["LongVideoHierarchicalSampler"]().sample(
        model, [positive], negative, "timeline", 32, 32, 3, 2, "replace", batch_cap=4, **common)
    assert latent["samples"].shape[2] == 5 and latent[LATENT_INFO]["keyframes"] == [0, 2, 4]
    assert latent[LATENT_INFO]["joins"] == [1, 2, 3, 4]

    (latent,) = nodes["LongVideoCoDenoiseSampler"]().sample(model, positive, negative, 32, 32, 12, 6, 2, "freenoise", **common)
    assert latent[LATENT_INFO]["joins"] == window_joins(12, 6, 2) == [4, 6, 10]  # windows 0-5, 4-9, 6-11

    (latent,) = nodes["LongVideoLatentInterpolate"]().interpolate(model, positive, negative, {"samples": torch.randn(1, 4, 3, 4, 4)},
                                                                  2, 1, "replace", attention_window=17, window=17,
                                                                  overlap=4, **common)
    assert latent[LATENT_INFO]["keyframes"] == [0, 2, 4] and latent[LATENT_INFO]["joins"] == [1, 2, 3, 4]

    (latent,) = nodes["LongVideoDistributedSampler"]().sample(
        model, positive, negative, 32, 32, "", 3, 4, 2, 2, 800.0, 10.0, 0.0, 800.0, 0.0, 10.0, False, True, **common)
    assert latent["samples"].shape[2] == 12 and latent[LATENT_INFO]["joins"] == [4, 8]


# ---------------------------------------------------------------------------------------------------
# the embedded model


def test_report_on_an_embedded_model_continuation_agrees_with_the_quality_bench():
    """8 chunks of 16 frames (2-4 carried over, learned, CFG 9, as the shipped workflow): the report reads the 7 joins
    the sampler put in its LATENT, and its seam ratio (optical flow) is within 15% of bench/quality.py's (object
    centroids) on the same frames (1.44 against 1.47 when written)."""
    from longvideo import NODE_CLASS_MAPPINGS as nodes
    from longvideo.bench.quality import Generated, Stretch, measure
    from longvideo.bench.quality import summarise as bench_summary
    from longvideo.nodes.continuation import LongVideoPromptSchedule
    from longvideo.sampling.continuation import ContinuationSettings, known_frame_counts

    model, clip, vae = nodes["LongVideoModelLoader"]().load(model="longvideo-shapes", dtype="fp32")
    schedule = LongVideoPromptSchedule().encode(clip, "\n".join(f"a red circle moving {d}" for d in ("right", "down", "left", "up")))[0]
    negative = nodes["LongVideoTextEncode"]().encode(clip, "")[0]
    (latent,) = nodes["LongVideoContinuationSampler"]().sample(model, negative, negative, 64, 64, 16, 8, 2, 4, "learned", 7,
                                                               20, 9.0, "dpmpp_2m", prompt_schedule=schedule)
    joins, _ = continuation_joins(known_frame_counts(ContinuationSettings(16, 8, 2, 4), 7, 0), 16, 0)
    _, text = LongVideoReport().report("x", False, "", 16, samples=latent, vae=vae)
    report = json.loads(text)
    assert report["joins"] == joins and len(joins) == 7 and report["joins_from"] == "sampler"

    frames = np.concatenate([b.numpy() for b in vae.decode_batches(latent["samples"], 16)])
    video = (frames * 255).round().astype(np.uint8)
    bench = bench_summary([measure(Generated(video, [Stretch(0, len(video), "right")], joins), "red")])["seam"]
    assert report["summary"]["seam_ratio"] == pytest.approx(bench, rel=0.15)
