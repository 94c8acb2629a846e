"""The UI workflows read well once loaded in ComfyUI's frontend: nodes sized as the frontend draws them, no two
nodes overlapping (title bars included), room for the wires between neighbours, groups that frame their own nodes
only, and a graph that "fit view" on a 1600x900 window shows with its text drawn."""

import glob
import importlib.util
import itertools
import json
import os

import numpy as np
import pytest

from longvideo import NODE_CLASS_MAPPINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
WIRE_ROOM = 30  # pixels kept free between any two nodes


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_ui_workflows", os.path.join(ROOT, "tools", "build_ui_workflows.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


def overlap(a, b, margin=0.0) -> bool:
    """Whether rectangles (x, y, w, h) a and b come closer than `margin`."""
    return (a[0] < b[0] + b[2] + margin and b[0] < a[0] + a[2] + margin
            and a[1] < b[1] + b[3] + margin and b[1] < a[1] + a[3] + margin)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_there_are_ui_workflows():
    assert UI_WORKFLOWS


def test_the_ui_workflows_are_what_the_builder_makes():
    built = builder.ui_workflows()
    assert sorted(built) == UI_WORKFLOWS
    for path, workflow in built.items():
        assert builder.serialise(workflow) == open(path, encoding="utf-8").read(), (
            f"{os.path.basename(path)} is out of date: run python tools/build_ui_workflows.py")


def test_drawn_size_follows_the_frontend():
    """LiteGraph's computeSize for LongVideoSampler: 4 slot rows (model, positive, negative, latent_image), six
    widgets (seed, its control_after_generate, steps, cfg, scheduler, denoise) and 8 below them."""
    sampler = next(n for n in load(builder.ui_path("text_to_video.json"))["nodes"]
                   if n["type"] == "LongVideoSampler")
    width, height = builder.drawn_size(sampler, NODE_CLASS_MAPPINGS["LongVideoSampler"])
    assert height == 4 * 20 + 6 * 24 + 8
    assert width >= 210
    # a long title widens the node instead of being cut
    titled = {**sampler, "title": "x" * 60}
    assert builder.drawn_size(titled, NODE_CLASS_MAPPINGS["LongVideoSampler"])[0] >= 60 * 7


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=os.path.basename)
def test_nodes_are_as_large_as_the_frontend_draws_them(path):
    for node in load(path)["nodes"]:
        width, height = builder.drawn_size(node, NODE_CLASS_MAPPINGS[node["type"]])
        assert node["size"][0] >= width and node["size"][1] >= height, node.get("title")


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=os.path.basename)
def test_no_two_nodes_overlap_and_wires_have_room(path):
    nodes = load(path)["nodes"]
    for a, b in itertools.combinations(nodes, 2):
        assert not overlap(builder.node_rect(a), builder.node_rect(b), WIRE_ROOM), (a.get("title"), b.get("title"))


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=os.path.basename)
def test_groups_frame_their_own_nodes_only(path):
    workflow = load(path)
    groups = workflow["groups"]
    for a, b in itertools.combinations(groups, 2):
        assert not overlap(a["bounding"], b["bounding"]), (a["title"], b["title"])
    for group in groups:
        x, y, w, h = group["bounding"]
        for node in workflow["nodes"]:
            nx, ny, nw, nh = builder.node_rect(node)
            inside = x <= nx and y + builder.GROUP_TITLE_HEIGHT <= ny and nx + nw <= x + w and ny + nh <= y + h
            assert inside or not overlap(group["bounding"], (nx, ny, nw, nh)), (group["title"], node.get("title"))


def test_staged_graphs_have_groups():
    for name in ("interpolation", "upscale"):
        workflow = load(builder.ui_path(f"{name}.json"))
        assert len(workflow["groups"]) >= 2
        for node in workflow["nodes"]:  # every node in exactly one stage
            assert sum(overlap(group["bounding"], builder.node_rect(node)) for group in workflow["groups"]) == 1


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=os.path.basename)
def test_fit_view_on_1600x900_draws_text(path):
    workflow = load(path)
    scale = builder.fit_scale(workflow)
    assert scale > builder.LOW_QUALITY_SCALE * 1.05
    assert workflow["extra"]["ds"]["scale"] == pytest.approx(scale, abs=1e-3)


def test_every_template_has_a_thumbnail_and_a_readable_numbered_title():
    """ComfyUI's Templates menu lists workflows/*.json under their file names, with <name>.jpg as thumbnail, in
    the order the folder lists them: numbered readable names, text to video first."""
    import cv2

    names = [os.path.splitext(os.path.basename(path))[0] for path in UI_WORKFLOWS]
    assert names == sorted(builder.TEMPLATE_NAMES.values())
    assert names[0] == builder.TEMPLATE_NAMES["text_to_video"] and names[0].startswith("1 ")
    assert [int(name.split(" ", 1)[0]) for name in names] == list(range(1, len(names) + 1))
    for path in UI_WORKFLOWS:
        image = cv2.imread(os.path.splitext(path)[0] + ".jpg")
        assert image is not None, f"no thumbnail for {os.path.basename(path)}: run python tools/make_thumbnails.py"
        assert image.shape[0] >= 128 and image.shape[1] >= 256


def test_strip_takes_frames_evenly_over_each_video():
    spec = importlib.util.spec_from_file_location("make_thumbnails", os.path.join(ROOT, "tools", "make_thumbnails.py"))
    thumbnails = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(thumbnails)
    long = np.arange(61, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    short = long[:5] + 100
    row = thumbnails.one_row([long, short])
    assert row.shape == (8, thumbnails.STRIP_FRAMES * 4, 3)
    taken = row[0, ::4, 0].astype(int)
    assert taken[0] == 0 and taken[-1] == 60 and set(np.diff(taken)) <= {2, 3}  # evenly, first to last
    assert row[4, :20:4, 0].tolist() == [100, 101, 102, 103, 104] and not row[4, 20:].any()  # shorter: padded
