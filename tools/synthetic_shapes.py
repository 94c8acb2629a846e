"""Procedurally drawn videos of one coloured shape moving in a straight line on a plain background (or turning once).

They train the embedded default model (tools/train_tiny_model.py) and give every long-video mode a quality that
can be measured (bench/quality.py, bench/interpolation_quality.py): the object's colour and centroid are known in
every frame, and `find_shape` reads them back from any frame, generated or drawn.

    clip = random_clip(random.Random(0), frames=16)
    video = render(clip, frames=16)        # uint8 [16, 64, 64, 3], RGB
    clip.prompt                            # "a red circle moving right"

Only numpy and OpenCV; no package imports, so scripts and tests can load this file on its own.
"""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 235), "yellow": (235, 215, 40)}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
BACKGROUND = (128, 128, 128)
SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class ShapeClip:
    """A shape of `radius` pixels whose centre starts at `start` (x, y) and moves `speed` pixels per frame.

    With `turn` = (frame, new direction) it moves `direction` up to frame - 1 and the new way from there on, at the same
    speed: what a continuation whose next prompt names another direction should make. Its prompt names the new way."""

    shape: str
    colour: str
    direction: str
    start: tuple[float, float]
    speed: float
    radius: float
    size: int = 64
    turn: tuple[int, str] | None = None

    @property
    def final_direction(self) -> str:
        return self.turn[1] if self.turn else self.direction

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.final_direction}"

    def centre(self, frame: float) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        before = frame if self.turn is None else min(frame, self.turn[0] - 1)
        x, y = self.start[0] + dx * self.speed * before, self.start[1] + dy * self.speed * before
        if self.turn is not None and frame > self.turn[0] - 1:
            tx, ty = DIRECTIONS[self.turn[1]]
            after = frame - (self.turn[0] - 1)
            x, y = x + tx * self.speed * after, y + ty * self.speed * after
        return x, y


def draw_frame(clip: ShapeClip, frame: float) -> np.ndarray:
    """One RGB frame [size, size, 3] uint8; `frame` may be fractional (sub-pixel positions, anti-aliased edges)."""
    image = np.empty((clip.size, clip.size, 3), np.uint8)
    image[:] = BACKGROUND
    x, y = clip.centre(frame)
    scale = 1 << SUBPIXEL_BITS
    colour = COLOURS[clip.colour]
    if clip.shape == "circle":
        cv2.circle(image, (round(x * scale), round(y * scale)), round(clip.radius * scale), colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)
        return image
    if clip.shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        half = clip.radius * 0.85
        points = [(x + cx * half, y + cy * half) for cx, cy in corners]
    else:
        points = [(x + clip.radius * math.cos(a), y + clip.radius * math.sin(a))
                  for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    polygon = np.array([[round(px * scale), round(py * scale)] for px, py in points], np.int32)
    cv2.fillPoly(image, [polygon], colour, cv2.LINE_AA, SUBPIXEL_BITS)
    return image


def render(clip: ShapeClip, frames: int, first: int = 0) -> np.ndarray:
    """Frames first .. first + frames - 1 as uint8 [frames, size, size, 3]."""
    return np.stack([draw_frame(clip, first + f) for f in range(frames)])


def random_clip(rng: random.Random, frames: int, size: int = 64, speed: tuple[float, float] = (1.0, 2.5),
                radius: tuple[float, float] = (6.0, 10.0)) -> ShapeClip:
    """A random clip whose shape stays wholly inside the frame for `frames` frames (speed shrinks if it must)."""
    shape, colour, direction = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(DIRECTIONS))
    r = rng.uniform(*radius)
    room = size - 2 * r - 2
    pixels_per_frame = min(rng.uniform(*speed), room / max(frames - 1, 1))
    travel = pixels_per_frame * (frames - 1)
    along = r + 1 + rng.uniform(0, room - travel)
    across = r + 1 + rng.uniform(0, room)
    dx, dy = DIRECTIONS[direction]
    along = along if dx + dy > 0 else size - along
    start = (along, across) if dx else (across, along)
    return ShapeClip(shape, colour, direction, start, pixels_per_frame, r, size)


def random_turning_clip(rng: random.Random, frames: int, turns: tuple[int, int], size: int = 64,
                        speed: tuple[float, float] = (1.0, 2.5), radius: tuple[float, float] = (6.0, 10.0)) -> ShapeClip:
    """A random clip that turns by a right angle (either way) at a frame in `turns` (inclusive) and stays wholly inside
    the frame (speed shrinks until the bent path fits)."""
    shape, colour, direction = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(DIRECTIONS))
    dx, dy = DIRECTIONS[direction]
    new = rng.choice([d for d, (tx, ty) in DIRECTIONS.items() if tx * dx + ty * dy == 0])
    turn = rng.randint(*turns)
    r = rng.uniform(*radius)
    pixels_per_frame = rng.uniform(*speed)
    while True:
        path = ShapeClip(shape, colour, direction, (0.0, 0.0), pixels_per_frame, r, size, (turn, new))
        corners = [path.centre(0), path.centre(turn - 1), path.centre(frames - 1)]
        low = [min(c[i] for c in corners) for i in (0, 1)]
        high = [max(c[i] for c in corners) for i in (0, 1)]
        if all(h - l <= size - 2 * r - 2 for l, h in zip(low, high)):
            break
        pixels_per_frame *= 0.9
    start = tuple(rng.uniform(r + 1 - l, size - r - 1 - h) for l, h in zip(low, high))
    return ShapeClip(shape, colour, direction, start, pixels_per_frame, r, size, (turn, new))


def random_clips(seed: int, frames: int, size: int = 64) -> Iterator[ShapeClip]:
    """An endless, seeded stream of random clips."""
    rng = random.Random(seed)
    while True:
        yield random_clip(rng, frames, size)


@dataclass(frozen=True)
class FoundShape:
    colour: str | None        # nearest palette colour, None when no object is visible
    centre: tuple[float, float] | None
    pixels: int
    # circle, square or triangle, by how much of its bounding box the object fills; None when no object is visible
    # or its colour is scattered over the frame instead of forming one blob (one_blob)
    shape: str | None = None


def find_shape(frame: np.ndarray, min_pixels: int = 6, threshold: float = 60.0) -> FoundShape:
    """The object's colour and centroid in an RGB frame (uint8 or float in 0..1), by thresholding against the background."""
    rgb = frame.astype(np.float32) * (255.0 if frame.dtype != np.uint8 and frame.max() <= 1.0 else 1.0)
    distance = np.linalg.norm(rgb - np.array(BACKGROUND, np.float32), axis=-1)
    mask = distance > threshold
    count = int(mask.sum())
    if count < min_pixels:
        return FoundShape(None, None, count)
    mean = rgb[mask].mean(axis=0)
    colour = min(COLOURS, key=lambda name: float(np.linalg.norm(mean - np.array(COLOURS[name], np.float32))))
    ys, xs = np.nonzero(mask)
    return FoundShape(colour, (float(xs.mean()), float(ys.mean())), count, shape_of(xs, ys) if one_blob(mask) else None)


def one_blob(mask: np.ndarray, share: float = 0.9) -> bool:
    """Whether one 8-connected blob holds `share` of the mask: one object, not colour scattered over the frame.

    A broken generated frame (smears over the whole frame) fills little of its bounding box and would otherwise read
    as a triangle; drawn and well generated frames are one blob (share 1.0), broken ones 0.3-0.6."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return count > 1 and areas.max() >= share * areas.sum()


def shape_of(xs: np.ndarray, ys: np.ndarray) -> str:
    """A square fills its (axis-aligned) bounding box, a circle pi / 4 of it, the upright triangle half of it.

    The bounds lie between the fills of drawn shapes (circles 0.67-0.84, squares 0.98-1, triangles 0.52-0.61) and of the
    same frames after the embedded model's VAE, which generated frames are read through and which rounds a square's
    corners (90% of decoded squares fill 0.86-0.97, circles 0.75-0.86, triangles 0.56-0.65). By the most frequent shape
    of a clip, 115 of 120 decoded drawn clips read right (the old bounds 0.9 / 0.64: 111); the rest are small circles
    the VAE squares off."""
    fill = len(xs) / float((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    return "square" if fill > 0.87 else "circle" if fill > 0.66 else "triangle"
