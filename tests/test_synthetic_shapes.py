"""The synthetic moving-shape videos: reproducible, on-screen, and readable back by `find_shape`."""

import random

import numpy as np
import pytest

from longvideo.tools.synthetic_shapes import (COLOURS, DIRECTIONS, SHAPES, find_shape, random_clip, random_clips,
                                              random_turning_clip, render)


def test_clips_are_seeded_and_endless():
    first = [clip for clip, _ in zip(random_clips(3, 16), range(20))]
    again = [clip for clip, _ in zip(random_clips(3, 16), range(20))]
    assert first == again
    assert {c.prompt.split()[1] for c in first} <= set(COLOURS)
    assert all(c.prompt == f"a {c.colour} {c.shape} moving {c.direction}" for c in first)


@pytest.mark.parametrize("seed", range(12))
def test_find_shape_reads_back_colour_and_path(seed):
    clip = random_clip(random.Random(seed), frames=16)
    video = render(clip, 16)
    assert video.shape == (16, 64, 64, 3) and video.dtype == np.uint8
    found = [find_shape(frame) for frame in video]
    assert all(f.colour == clip.colour for f in found)
    for frame, f in enumerate(found):
        x, y = clip.centre(frame)
        tolerance = 1.5 if clip.shape != "triangle" else clip.radius / 2 + 1  # a triangle's centroid is not its centre
        assert abs(f.centre[0] - x) < tolerance and abs(f.centre[1] - y) < tolerance
    dx, dy = DIRECTIONS[clip.direction]
    moved = np.subtract(found[-1].centre, found[0].centre)
    assert moved @ np.array([dx, dy]) > 0.9 * np.linalg.norm(moved) > 0


def test_every_shape_colour_and_direction_occurs():
    clips = [clip for clip, _ in zip(random_clips(0, 16), range(400))]
    assert {c.shape for c in clips} == set(SHAPES)
    assert {c.colour for c in clips} == set(COLOURS)
    assert {c.direction for c in clips} == set(DIRECTIONS)


def test_an_empty_frame_has_no_shape():
    assert find_shape(np.full((64, 64, 3), 0.5019608, np.float32)).colour is None


def test_colour_scattered_over_the_frame_has_no_shape():
    """A broken frame (the object smeared into specks) fills little of its bounding box, as a triangle does; it must
    not read as one. One blob of the same colour does."""
    frame = np.full((64, 64, 3), 128, np.uint8)
    for x, y in [(8, 10), (30, 12), (50, 30), (20, 45), (44, 52)]:
        frame[y:y + 4, x:x + 4] = COLOURS["blue"]
    found = find_shape(frame)
    assert found.colour == "blue" and found.shape is None
    frame[:] = 128
    frame[20:36, 20:36] = COLOURS["blue"]
    assert find_shape(frame).shape == "square"


@pytest.mark.parametrize("seed", range(8))
def test_a_turning_clip_turns_once_at_its_speed_and_stays_on_screen(seed):
    clip = random_turning_clip(random.Random(seed), frames=16, turns=(1, 8), speed=(1.5, 3.0))
    turn, new = clip.turn
    assert 1 <= turn <= 8 and clip.prompt.endswith(f"moving {new}") and clip.final_direction == new
    dx, dy = DIRECTIONS[clip.direction]
    assert DIRECTIONS[new][0] * dx + DIRECTIONS[new][1] * dy == 0  # a right angle
    steps = [np.subtract(clip.centre(f), clip.centre(f - 1)) for f in range(1, 16)]
    for f, step in enumerate(steps, start=1):
        assert np.allclose(step, np.multiply(DIRECTIONS[clip.direction if f < turn else new], clip.speed))
    for f in range(16):
        assert all(clip.radius + 1 - 1e-9 <= c <= 64 - clip.radius - 1 + 1e-9 for c in clip.centre(f))
    found = [find_shape(frame) for frame in render(clip, 16)]
    assert all(f.colour == clip.colour for f in found)
