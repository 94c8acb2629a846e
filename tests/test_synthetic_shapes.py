"""The synthetic moving-shape videos: reproducible, on-screen, and readable back by `find_shape`."""

import random

import numpy as np
import pytest

from longvideo.tools.synthetic_shapes import COLOURS, DIRECTIONS, SHAPES, find_shape, random_clip, random_clips, render


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
