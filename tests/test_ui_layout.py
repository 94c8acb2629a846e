"""The UI workflows read well once loaded in ComfyUI's frontend: nodes sized as the frontend draws them (title
included: the frontend widens a node to fit its title), no two nodes overlapping (title bars included), room for the
wires between neighbours, groups that frame their own nodes only, and a graph that "fit view" on a 1600x900 window
shows with its text drawn.

All of it holds for the pack's templates (workflows/*.json, tools/build_ui_workflows.py) and for the workflows of
ComfyUI's own video models (workflows/comfyui/*.json, tools/build_comfy_workflows.py). The cases of the latter that
need the node classes of the real ComfyUI ($COMFYUI_PATH, default ../shared/comfyui) skip with the reason without it;
under CI (CI=true) they fail instead, as tests/test_comfy_models.py's do.
"""

import glob
import importlib.util
import itertools
import json
import os
import sys

import numpy as np
import pytest

import comfy_env

from longvideo import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

pytestmark = pytest.mark.usefixtures("comfyui_session")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
COMFY_FOLDER = os.path.join(ROOT, "workflows", "comfyui")
COMFY_UI_WORKFLOWS = sorted(glob.glob(os.path.join(COMFY_FOLDER, "*.json")))
COMFY_API_WORKFLOWS = sorted(glob.glob(os.path.join(COMFY_FOLDER, "api", "*.json")))
ALL_UI_WORKFLOWS = UI_WORKFLOWS + COMFY_UI_WORKFLOWS
WIRE_ROOM = 30  # pixels kept free between any two nodes


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_tool("build_ui_workflows")


def _name(path):
    """A test id: the file name, with comfyui/ before those of ComfyUI's own models."""
    return ("comfyui/" if os.path.dirname(path) == COMFY_FOLDER else "") + os.path.basename(path)


@pytest.fixture(scope="module")
def comfy_builder():
    """tools/build_comfy_workflows.py, with ComfyUI imported (skips, or fails under CI, without ComfyUI); the folders
    it adds to sys.path to import its helpers are taken off again."""
    comfy_env.comfyui_or_skip()
    path = list(sys.path)
    try:
        return _load_tool("build_comfy_workflows")
    finally:
        sys.path[:] = path


@pytest.fixture(scope="module")
def comfy_classes(comfy_builder):
    """(node classes, display names) of a ComfyUI with the pack loaded: core NODE_CLASS_MAPPINGS and
    NODE_DISPLAY_NAME_MAPPINGS with the pack's."""
    return comfy_builder.node_classes(), comfy_builder.display_names()


def classes_for(path, request):
    """(node classes, display names) the nodes of a UI workflow have: the pack's, or with ComfyUI's for
    workflows/comfyui/."""
    if path in COMFY_UI_WORKFLOWS:
        return request.getfixturevalue("comfy_classes")
    return NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


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
    widgets (seed, its control_after_generate, steps, cfg, scheduler, denoise), 8 below them and 6 below all."""
    sampler = next(n for n in load(builder.ui_path("text_to_video.json"))["nodes"]
                   if n["type"] == "LongVideoSampler")
    width, height = builder.drawn_size(sampler, NODE_CLASS_MAPPINGS["LongVideoSampler"])
    assert height == 4 * 20 + 6 * 24 + 8 + 6
    assert width >= 210
    # a long title widens the node instead of being cut: 30 left of it, 0.33 x 30 right of it, 14px Arial ('x' is
    # 0.5 em wide: 7 px)
    titled = {**sampler, "title": "x" * 60}
    assert builder.drawn_size(titled, NODE_CLASS_MAPPINGS["LongVideoSampler"])[0] >= 30 + 60 * 7 + 9.9


def test_text_is_measured_in_arial():
    """The frontend measures titles in 14px Arial (and labels in 12px): Helvetica's widths, which Arial shares."""
    assert len(builder.ARIAL_WIDTHS) == 95 and builder.ARIAL_WIDTHS["~"] == 584  # every printable ASCII character
    assert builder.text_width("W") == pytest.approx(0.944 * 14)
    assert builder.text_width("i", 12) == pytest.approx(0.222 * 12)
    assert builder.text_width("Save video (streaming decode)") == pytest.approx(193.7, abs=0.1)
    assert builder.text_width("\u2192") == 14  # outside ASCII: a full em
    assert builder.title_width("Sample") == pytest.approx(30 + builder.text_width("Sample") + 0.33 * 30)


def test_untitled_nodes_are_as_wide_as_their_display_name():
    """Without a title of its own a node shows its class's display name (NODE_DISPLAY_NAME_MAPPINGS), which the
    layout gives room for, not its class name."""
    sampler = next(n for n in load(builder.ui_path("co_denoise.json"))["nodes"]
                   if n["type"] == "LongVideoCoDenoiseSampler")
    untitled = {k: v for k, v in sampler.items() if k != "title"}
    shown = NODE_DISPLAY_NAME_MAPPINGS["LongVideoCoDenoiseSampler"]
    assert builder.display_title(untitled, NODE_DISPLAY_NAME_MAPPINGS) == shown
    cls = NODE_CLASS_MAPPINGS["LongVideoCoDenoiseSampler"]
    width = builder.drawn_size(untitled, cls, NODE_DISPLAY_NAME_MAPPINGS)[0]
    assert width >= 30 + builder.text_width(shown) + 9.9 > 30 + builder.text_width("LongVideoCoDenoiseSampler") + 9.9


@pytest.mark.parametrize("path", ALL_UI_WORKFLOWS, ids=_name)
def test_nodes_are_as_large_as_the_frontend_draws_them(path, request):
    classes, names = classes_for(path, request)
    for node in load(path)["nodes"]:
        width, height = builder.drawn_size(node, classes[node["type"]], names)
        assert node["size"][0] >= width and node["size"][1] >= height, builder.display_title(node, names)
        # the frontend's own rule for the title, whatever the builder's: never narrower than it
        assert node["size"][0] >= 30 + builder.text_width(builder.display_title(node, names)) + 9.9


@pytest.mark.parametrize("path", ALL_UI_WORKFLOWS, ids=_name)
def test_no_two_nodes_overlap_and_wires_have_room(path):
    nodes = load(path)["nodes"]
    for a, b in itertools.combinations(nodes, 2):
        assert not overlap(builder.node_rect(a), builder.node_rect(b), WIRE_ROOM), (a.get("title"), b.get("title"))


@pytest.mark.parametrize("path", ALL_UI_WORKFLOWS, ids=_name)
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


def test_there_are_comfy_ui_workflows():
    assert COMFY_API_WORKFLOWS and COMFY_UI_WORKFLOWS


def test_the_comfy_ui_workflows_are_what_the_builder_makes(comfy_builder, comfy_classes):
    """One UI file per API file in workflows/comfyui/api/ (a new one is picked up), each as the builder lays it out."""
    built = comfy_builder.ui_workflows(*comfy_classes)
    assert sorted(built) == COMFY_UI_WORKFLOWS == [os.path.join(COMFY_FOLDER, os.path.basename(p))
                                                   for p in COMFY_API_WORKFLOWS]
    for path, workflow in built.items():
        assert builder.serialise(workflow) == open(path, encoding="utf-8").read(), (
            f"comfyui/{os.path.basename(path)} is out of date: run python tools/build_comfy_workflows.py")


def test_core_nodes_show_comfyuis_display_names(comfy_classes):
    """An untitled core node shows ComfyUI's display name (nodes.NODE_DISPLAY_NAME_MAPPINGS), a pack node the pack's."""
    _, names = comfy_classes
    assert builder.display_title({"type": "UNETLoader"}, names) == "Load Diffusion Model"
    assert builder.display_title({"type": "CLIPTextEncode"}, names) == "CLIP Text Encode (Prompt)"
    pack_node = {"type": "LongVideoSaveVideo"}
    assert builder.display_title(pack_node, names) == NODE_DISPLAY_NAME_MAPPINGS["LongVideoSaveVideo"]


@pytest.mark.parametrize("name,sampler_type", [("wan21_continuation", "LongVideoContinuationSampler"),
                                               ("wan21_hierarchical", "LongVideoHierarchicalSampler")])
def test_wan_sampler_is_as_wide_as_its_title_and_clear_of_save_video(name, sampler_type, comfy_classes):
    """The Wan 2.1 sampler's long title ("Continuation: 4 chunks of 21 latent frames, ...", 555 px in 14px Arial) makes
    the frontend draw it 596 px wide: the layout gives it that width, and the Save Video node stands clear of it as
    drawn (placed 400 px to its right at an assumed width of 320, it was drawn over)."""
    classes, names = comfy_classes
    nodes = load(os.path.join(COMFY_FOLDER, f"{name}.json"))["nodes"]
    (sampler,) = [n for n in nodes if n["type"] == sampler_type]
    (save,) = [n for n in nodes if n["type"] == "LongVideoSaveVideo"]
    title = builder.display_title(sampler, names)
    assert title == sampler["title"] and len(title) > 80
    drawn_title = 30 + builder.text_width(title) + 0.33 * 30  # computeSize's title width, in Arial
    assert drawn_title > 320 + (400 - 320)  # what the earlier layout assumed and left beside it
    assert builder.title_width(title) == pytest.approx(drawn_title)
    width = builder.drawn_size(sampler, classes[sampler_type], names)[0]
    assert width >= drawn_title and sampler["size"][0] >= width

    def drawn_rect(node):  # as the frontend draws it: never narrower than its title
        x, y, w, h = builder.node_rect(node)
        return x, y, max(w, 30 + builder.text_width(builder.display_title(node, names)) + 9.9), h

    assert not overlap(drawn_rect(sampler), drawn_rect(save), WIRE_ROOM)
    assert builder.node_rect(save)[0] >= sampler["pos"][0] + width + WIRE_ROOM


def test_staged_graphs_have_groups():
    for name in ("interpolation", "upscale"):
        workflow = load(builder.ui_path(f"{name}.json"))
        assert len(workflow["groups"]) >= 2
        for node in workflow["nodes"]:  # every node in exactly one stage
            assert sum(overlap(group["bounding"], builder.node_rect(node)) for group in workflow["groups"]) == 1


@pytest.mark.parametrize("path", ALL_UI_WORKFLOWS, ids=_name)
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
