"""Every shipped workflow, run as shipped, makes what it promises.

Each API workflow runs through run_workflow (the code path of run_workflow.py and of ComfyUI's nodes) with the
shipped widget values and the embedded model (checkpoints/longvideo-shapes; no model of that name in the test's
models folder). Each video it saves must have the frame count and size the README's workflow table gives, and
show the object in the prompt's colour in at least 90% of its frames and in the prompt's shape in at least 60%
(tools/synthetic_shapes.py find_shape, as bench/quality.py reads them), and move it without a jump
(bench/quality.py's teleport: no frame-to-frame centroid step longer than 3x the video's median step + 2 px) unless
the table says otherwise. The UI workflows are the same graphs (tests/test_workflows.py checks that).

The workflows run at their shipped sizes, so it is the slowest file (about 14 minutes of one core on a 2-core CI
machine; pytest-xdist spreads its tests over the cores)."""

import glob
import os
from dataclasses import dataclass

import av
import numpy as np
import pytest

from longvideo import NODE_CLASS_MAPPINGS
from longvideo.bench.quality import centroid_steps, teleports
from longvideo.tools.synthetic_shapes import find_shape
from longvideo.utils.video_io import VIDEO_FORMATS
from longvideo.utils.workflow import load_workflow, run_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))
MIN_COLOUR_SHARE = 0.9
# The embedded model rounds corners a little either way: of the shipped workflows' circles, 6-25% of the frames fill
# their bounding box like a square (find_shape's bound 0.87) or leave it like a triangle.
MIN_SHAPE_SHARE = 0.6


@dataclass(frozen=True)
class Video:
    """A video a workflow saves: its filename prefix, frames, (width, height), and the prompts' colours and shapes,
    each spread evenly over its timeline (frame f of n shows colours[f * len(colours) // n])."""

    prefix: str
    frames: int
    size: tuple[int, int]
    colours: tuple[str, ...] = ("red",)
    shapes: tuple[str, ...] = ("circle",)
    jumps: bool | None = False  # False: one object moving without a jump; True: it jumps (known); None: not checked


# What the README's workflow table promises for each shipped workflow.
SHIPPED = {
    "text_to_video": [Video("LongVideo/text_to_video", 16, (64, 64))],
    "continuation": [Video("LongVideo/continuation", 210, (64, 64))],  # 16 chunks, 2 to 4 frames carried over
    "co_denoise": [Video("LongVideo/co_denoise", 96, (64, 64))],
    "window_attention": [Video("LongVideo/window_attention", 96, (64, 64))],
    "interpolation": [Video("LongVideo/interpolation", 65, (64, 64)), Video("LongVideo/interpolation_flow", 65, (64, 64))],
    "hierarchical": [Video("LongVideo/hierarchical", 226, (64, 64))],
    "upscale": [Video("LongVideo/upscale", 32, (128, 128))],
    "distributed": [Video("LongVideo/distributed", 16, (64, 64))],  # one red circle, a prompt per clip
}


def name_of(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def test_every_shipped_workflow_has_its_promise():
    assert sorted(SHIPPED) == sorted(map(name_of, API_WORKFLOWS))


def read_video(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def share_right(frames: np.ndarray, expected: tuple[str, ...], what: str) -> float:
    """The share of frames whose object's `what` ("colour" or "shape") is the prompt's at that point of the timeline."""
    along = [expected[f * len(expected) // len(frames)] for f in range(len(frames))]
    return float(np.mean([getattr(find_shape(frame), what) == wanted for frame, wanted in zip(frames, along)]))


def test_share_right_reads_the_drawn_object():
    from longvideo.tools.synthetic_shapes import ShapeClip, render

    red = render(ShapeClip("circle", "red", "right", (20.0, 32.0), 1.0, 8.0), 4)
    blue = render(ShapeClip("square", "blue", "left", (40.0, 32.0), 1.0, 8.0), 4)
    both = np.concatenate([red, blue])
    assert share_right(both, ("red", "blue"), "colour") == 1.0
    assert share_right(both, ("red",), "colour") == 0.5
    assert share_right(both, ("circle", "square"), "shape") == 1.0
    assert share_right(both, ("square", "circle"), "shape") == 0.0
    assert share_right(np.full_like(red, 128), ("red",), "colour") == 0.0  # no object: not counted as right


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=name_of)
def test_shipped_workflow_makes_what_it_promises(path, tmp_path, monkeypatch):
    out = tmp_path / "videos"
    monkeypatch.setenv("LONGVIDEO_OUTPUT_DIR", str(out))
    ui = run_workflow(load_workflow(path, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    saved = {entry["subfolder"] + "/" + entry["filename"]: os.path.join(out, entry["subfolder"], entry["filename"])
             for node_ui in ui.values() for entry in node_ui["images"] if entry["filename"].rsplit(".", 1)[-1] in VIDEO_FORMATS}
    promised = SHIPPED[name_of(path)]
    assert len(saved) == len(promised)
    for video in promised:
        matches = [file for name, file in saved.items() if name.rsplit("_", 1)[0] == video.prefix]
        assert len(matches) == 1, (video.prefix, sorted(saved))
        frames = read_video(matches[0])
        assert frames.shape == (video.frames, video.size[1], video.size[0], 3)
        share = share_right(frames, video.colours, "colour")
        assert share >= MIN_COLOUR_SHARE, f"{video.prefix}: the object has the prompt's colour in {share:.0%} of the frames"
        share = share_right(frames, video.shapes, "shape")
        assert share >= MIN_SHAPE_SHARE, f"{video.prefix}: the object has the prompt's shape in {share:.0%} of the frames"
        if video.jumps is not None:
            steps = centroid_steps(frames)
            assert teleports(steps) == video.jumps, (
                f"{video.prefix}: largest step {max(steps):.1f} px, median {np.median(steps):.2f} px")
