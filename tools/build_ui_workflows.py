"""Regenerate the UI-format workflows (workflows/*.json) from the API-format ones (workflows/api/*.json).

    python tools/build_ui_workflows.py [--check]

The API files are the source; the UI files are what users drag into ComfyUI. --check only reports
UI files that are missing or out of date (exit 1), which the tests also verify.

The layout is generated here: nodes stand in columns by stage (a node's column is its longest chain of inputs),
stages that belong together sit in titled groups, and every node is sized as ComfyUI's frontend draws it
(`drawn_size`: its title bar, a row per slot, a row per widget, a text box per multiline widget, and as wide as its
title: the frontend widens a node to fit its title when it loads a workflow), so no two nodes overlap once loaded and
there is room for the wires between neighbours. tools/build_comfy_workflows.py lays out the workflows of ComfyUI's
own video models with the same `lay_out`. `fit_scale` is the zoom ComfyUI's
"fit view" gives the graph on a 1600x900 window; tests/test_ui_layout.py checks it stays above the zoom below
which the frontend stops drawing text.
"""

import argparse
import glob
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pack_import import ROOT, import_pack  # noqa: E402

# What ComfyUI's frontend draws (LGraphNode.computeSize of comfyui-frontend-package 1.27, which ComfyUI's
# requirements pin; on loading a workflow the frontend grows every node to at least that size):
# LiteGraph.NODE_TITLE_HEIGHT, NODE_SLOT_HEIGHT, a widget's NODE_WIDGET_HEIGHT + 4, 8 below the widgets and 6 below
# everything, the NODE_WIDTH minimum (1.5 x for a node with widgets), and the padding around a widget's label
# (BaseWidget: minValueWidth 42 + 2 x (margin 15 + arrowMargin 6 + arrowWidth 10)). Its width is the widest of: the
# title (NODE_TITLE_HEIGHT left of it, 0.33 x that right of it, in 14px Arial), the widget labels + that padding, the
# input and output slot labels side by side (12px Arial) + 2 x NODE_SLOT_HEIGHT (+ 5 between), and the minimum.
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
WIDGETS_BOTTOM = 8
NODE_BOTTOM = 6
TEXT_BOX_HEIGHT = 100  # a multiline text widget: the frontend's minimum is 50; room to read a prompt
NODE_WIDTH = 140
WIDGET_PADDING = 104
TITLE_FONT_SIZE = 14  # LiteGraph.NODE_TEXT_SIZE, NODE_FONT "Arial"
LABEL_FONT_SIZE = 12  # LiteGraph.NODE_SUBTEXT_SIZE
# The frontend measures text with the canvas (measureText) in Arial, or the font that stands in for it: Liberation Sans
# and Arimo (Linux, ChromeOS) have Arial's widths. Only a browser without any of them (DejaVu Sans in their place: up to
# 16% wider) draws titles wider than `title_width`; COLUMN_GAP absorbs part of that.
# Arial's advance widths (1/1000 em; Helvetica's metrics, which Arial shares) of the printable ASCII characters,
# space to tilde; any other character counts a full em.
ARIAL_WIDTHS = dict(zip(map(chr, range(32, 127)), (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  # space to /
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,  # 0-9 : ; < = > ?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,  # @ A-O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,  # P-Z [ \ ] ^ _
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,  # ` a-o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)))  # p-z { | } ~
# The builder's own choice beyond the frontend's minimum: nodes at least 1.5 x NODE_WIDTH wide, and up to MAX_WIDTH
# wide where generous label widths (CHAR_WIDTH a character) ask for it, so values beside the labels stay readable.
MIN_WIDTH = 210
MAX_WIDTH = 330
CHAR_WIDTH = 7.5
# Spacing: the gap between columns leaves the wires visible even between two groups' frames.
COLUMN_GAP = 60
ROW_GAP = 40
GROUP_PADDING = 15
GROUP_TITLE_HEIGHT = 34  # LGraphGroup: font 24 x 1.4
# The frontend's "fit view" (DragAndScale.fitToBounds) zooms to 0.75 x the scale at which the nodes fill the
# canvas; the canvas of a 1600x900 window, less the side bar and the menu, is about 1550x850. Below a zoom of
# MinFontSizeForLOD / NODE_TEXT_SIZE = 8 / 14 it draws nodes without text.
CANVAS = (1550, 850)
FIT_ZOOM = 0.75
LOW_QUALITY_SCALE = 8 / 14
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
GROUP_COLOUR = "#3f789e"

# The UI files are ComfyUI templates (Templates > Custom Nodes > this pack): ComfyUI lists the .json files of the
# pack's workflows/ folder, shows each under its file name and its <name>.jpg as thumbnail
# (tools/make_thumbnails.py), in the order the folder lists them. So the UI files have readable names, numbered in
# the order to try them. The API files in workflows/api/ keep short names for the command line.
TEMPLATE_NAMES = {
    "text_to_video": "1 Text to video",
    "continuation": "2 Continuation, 16 chunks",
    "co_denoise": "3 Co-denoised windows, 96 frames",
    "hierarchical": "4 Hierarchical keyframes and infill",
    "interpolation": "5 Frame interpolation 5 to 65",
    "window_attention": "6 Window attention, 96 frames",
    "upscale": "7 Upscale and refine",
    "distributed": "8 Clip-parallel sampling (Video-Infinity)",
}


def ui_path(api_path: str) -> str:
    """The UI (template) file of an API workflow file."""
    name = os.path.splitext(os.path.basename(api_path))[0]
    return os.path.join(ROOT, "workflows", TEMPLATE_NAMES.get(name, name) + ".json")


# Groups of the graphs that have stages: (title, node ids), in the order they are laid out.
GROUPS = {
    "interpolation": [
        ("Sample 5 keyframes", ["1", "2", "3", "4", "5"]),
        ("Latent interpolation 5 -> 17 -> 65", ["6", "7", "8"]),
        ("Optical flow 5 -> 65, to compare", ["9", "10", "11"]),
    ],
    "upscale": [
        ("Sample 32 frames at 64x64", ["1", "2", "3", "4", "5", "6"]),
        ("Upscale 2x, refine, save", ["7", "8", "9"]),
    ],
}


def ui_workflows() -> dict[str, dict]:
    """{UI file path: UI workflow} built from every API workflow."""
    pack = import_pack()
    from longvideo.utils.workflow import api_to_ui, load_workflow

    built = {}
    for api_file in sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json"))):
        name = os.path.splitext(os.path.basename(api_file))[0]
        api = load_workflow(api_file, pack.NODE_CLASS_MAPPINGS)
        ui = api_to_ui(api, pack.NODE_CLASS_MAPPINGS)
        built[ui_path(api_file)] = lay_out(ui, api, pack.NODE_CLASS_MAPPINGS, GROUPS.get(name, []),
                                            pack.NODE_DISPLAY_NAME_MAPPINGS)
    return built


# ---------------------------------------------------------------------------------------------------
# sizes


def _widgets(cls) -> list[tuple[str, bool]]:
    """(name, multiline) of each widget the frontend draws for a node class, in order (a seed's
    control_after_generate is a widget of its own)."""
    types = cls.INPUT_TYPES()
    widgets = []
    for section in ("required", "optional"):
        for name, entry in (types.get(section) or {}).items():
            kind, opts = entry[0], entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            is_widget = isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES
            if not is_widget or opts.get("forceInput"):
                continue
            widgets.append((name, bool(opts.get("multiline"))))
            control = opts.get("control_after_generate")
            if control or (control is None and name in ("seed", "noise_seed") and kind == "INT"):
                widgets.append(("control_after_generate", False))
    return widgets


def text_width(text: str, font_size: float = TITLE_FONT_SIZE) -> float:
    """Width in pixels of `text` drawn in Arial at `font_size` (what the frontend's measureText gives)."""
    return sum(ARIAL_WIDTHS.get(char, 1000) for char in text) * font_size / 1000


def title_width(title: str) -> float:
    """The width computeSize gives a node for its title: NODE_TITLE_HEIGHT left of the text, 0.33 x that right of it."""
    return TITLE_HEIGHT * 1.33 + text_width(title, TITLE_FONT_SIZE)


def display_title(node: dict, display_names: dict | None = None) -> str:
    """The title the frontend draws on a UI node: its own title, else its class's display name (ComfyUI's
    NODE_DISPLAY_NAME_MAPPINGS, which holds the core nodes' and, once loaded, every pack's), else its class name."""
    return node.get("title") or (display_names or {}).get(node["type"]) or node["type"]


def drawn_size(node: dict, cls, display_names: dict | None = None) -> tuple[int, int]:
    """(width, height) of a UI node as the frontend draws it, title bar excluded (LGraphNode.computeSize), rounded up:
    a row per slot (inputs that are not widgets, beside the outputs), a row per widget, a text box per multiline widget;
    as wide as its title (`display_title`), its widest labels and the frontend's minimum, text measured in Arial; and
    at least the builder's readable width (MIN_WIDTH, or up to MAX_WIDTH for long labels)."""
    widgets = _widgets(cls)
    widget_names = {name for name, _ in widgets}
    slots = [s for s in node.get("inputs") or [] if s["name"] not in widget_names]
    outputs = node.get("outputs") or []
    rows = max(len(slots), len(outputs), 1)
    height = rows * SLOT_HEIGHT + sum(TEXT_BOX_HEIGHT if multiline else WIDGET_HEIGHT for _, multiline in widgets)
    height += (WIDGETS_BOTTOM if widgets else 0) + NODE_BOTTOM

    def label(text):
        return text_width(text, LABEL_FONT_SIZE)

    inputs_width = max((label(s["name"]) for s in slots), default=0)
    outputs_width = max((label(o["name"]) for o in outputs), default=0)
    frontend = max(title_width(display_title(node, display_names)),
                   NODE_WIDTH * (1.5 if widgets else 1),
                   inputs_width + outputs_width + 2 * SLOT_HEIGHT + (5 if inputs_width and outputs_width else 0),
                   max((label(name) for name, _ in widgets), default=-WIDGET_PADDING) + WIDGET_PADDING)
    slot_chars = max((len(s["name"]) for s in slots), default=0) + max((len(o["name"]) for o in outputs), default=0)
    readable = min(MAX_WIDTH, max(MIN_WIDTH,
                                  CHAR_WIDTH * max((len(name) for name, _ in widgets), default=0) + WIDGET_PADDING,
                                  CHAR_WIDTH * slot_chars + 2 * SLOT_HEIGHT + 5))
    return math.ceil(max(frontend, readable)), math.ceil(height)


def node_rect(node: dict) -> tuple[float, float, float, float]:
    """(x, y, width, height) a UI node covers on the canvas, title bar included (pos is the body's top left)."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, width, height + TITLE_HEIGHT


def bounds(rects) -> tuple[float, float, float, float]:
    rects = list(rects)
    left, top = min(r[0] for r in rects), min(r[1] for r in rects)
    return left, top, max(r[0] + r[2] for r in rects) - left, max(r[1] + r[3] for r in rects) - top


def fit_scale(workflow: dict) -> float:
    """The zoom of the frontend's "fit view" for this graph on a 1600x900 window."""
    _, _, width, height = bounds(node_rect(n) for n in workflow["nodes"])
    return FIT_ZOOM * min(CANVAS[0] / max(width, 300), CANVAS[1] / max(height, 300))


# ---------------------------------------------------------------------------------------------------
# layout


def lay_out(ui: dict, api: dict, node_classes: dict, groups: list[tuple[str, list[str]]],
            display_names: dict | None = None) -> dict:
    """Place and size the nodes of a UI workflow built by api_to_ui from `api`; add `groups` as titled frames.

    Every node gets its `drawn_size` (`display_names`: the display names of the node classes, for the titles of nodes
    without one of their own), and placement uses those sizes. Columns by stage: a node's column is one more than its
    deepest input's, and a column is as wide as its widest node. Blocks (a group, or a node outside every group) are
    placed in column order: each starts below whatever already fills the columns it spans, so groups never overlap and
    a group's frame holds only its own nodes.
    """
    nodes = {str(node["id"]): node for node in ui["nodes"]}
    # api_to_ui keeps numeric API ids and numbers others 1, 2, ... in the API file's order
    numeric = all(str(node_id).isdigit() for node_id in api)
    ui_id = {node_id: str(int(node_id)) if numeric else str(i) for i, node_id in enumerate(api, 1)}
    sources = {ui_id[node_id]: [ui_id[str(v[0])] for v in (node.get("inputs") or {}).values() if _is_link(v)]
               for node_id, node in api.items()}
    column = {}
    for node in ui["nodes"]:  # api_to_ui lists them sources first
        node_id = str(node["id"])
        column[node_id] = 1 + max((column[s] for s in sources[node_id]), default=-1)
    for node in ui["nodes"]:
        node["size"] = list(drawn_size(node, node_classes[node["type"]], display_names))
    widths = [max(nodes[n]["size"][0] for n in nodes if column[n] == c) for c in range(max(column.values()) + 1)]
    left = [sum(widths[:c]) + COLUMN_GAP * c for c in range(len(widths))]

    grouped = {node_id: i for i, (_, members) in enumerate(groups) for node_id in members}
    unknown = [node_id for node_id in grouped if node_id not in nodes]
    if unknown:
        raise ValueError(f"GROUPS names nodes {unknown} that the workflow does not have")
    blocks = [(title, list(members)) for title, members in groups]
    blocks += [(None, [node_id]) for node_id in nodes if node_id not in grouped]
    blocks.sort(key=lambda block: min(column[n] for n in block[1]))

    free = [0.0] * len(widths)  # the first free y of each column
    frames = []
    for title, members in blocks:
        first, last = min(column[n] for n in members), max(column[n] for n in members)
        top = max(free[first:last + 1])
        inner = top + (GROUP_TITLE_HEIGHT + GROUP_PADDING if title else 0)
        bottom = inner
        for c in range(first, last + 1):
            y = inner
            in_column = [n for n in members if column[n] == c]
            in_column.sort(key=lambda n: (_mean_source_y(n, sources, nodes), int(n) if n.isdigit() else 0))
            for node_id in in_column:
                node = nodes[node_id]
                node["pos"] = [left[c], y + TITLE_HEIGHT]
                y += TITLE_HEIGHT + node["size"][1] + ROW_GAP
                node["_placed"] = True
            bottom = max(bottom, y - ROW_GAP)
        if title:
            bottom += GROUP_PADDING
            x0 = left[first] - GROUP_PADDING
            x1 = left[last] + widths[last] + GROUP_PADDING
            frames.append({"id": len(frames) + 1, "title": title, "bounding": [x0, top, x1 - x0, bottom - top],
                           "color": GROUP_COLOUR, "font_size": 24, "flags": {}})
        for c in range(first, last + 1):
            free[c] = bottom + ROW_GAP
    for node in ui["nodes"]:
        node.pop("_placed", None)
    ui["groups"] = frames
    x, y, width, height = bounds(node_rect(n) for n in ui["nodes"])
    scale = round(fit_scale(ui), 3)
    # Opened, the graph appears as "fit view" shows it: centred at that zoom (screen = (canvas + offset) x scale).
    offset = [round(CANVAS[0] / scale / 2 - x - width / 2, 1), round(CANVAS[1] / scale / 2 - y - height / 2, 1)]
    ui["extra"] = {"ds": {"scale": scale, "offset": offset}}
    return ui


def _mean_source_y(node_id, sources, nodes) -> float:
    placed = [nodes[s]["pos"][1] for s in sources[node_id] if nodes[s].get("_placed")]
    return sum(placed) / len(placed) if placed else 0.0


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def serialise(workflow: dict) -> str:
    return json.dumps(workflow, indent=2) + "\n"


def main() -> int:
    return build(__doc__, ui_workflows)


def build(doc: str, make_workflows) -> int:
    """The command line of a workflow builder: write the UI files `make_workflows()` gives, or with --check only report
    those that are missing or out of date (exit 1)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date UI files instead of writing them")
    args = parser.parse_args()
    stale = []
    for path, workflow in make_workflows().items():
        text = serialise(workflow)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + os.path.relpath(path, ROOT))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
