"""Regenerate the UI-format workflows for ComfyUI's own video models (workflows/comfyui/*.json) from the API-format
ones (workflows/comfyui/api/*.json), laid out as tools/build_ui_workflows.py lays out the pack's own templates.

    COMFYUI_PATH=../shared/comfyui python tools/build_comfy_workflows.py [--check]

These graphs use ComfyUI's core nodes (UNETLoader, CLIPLoader, VAELoader, CLIPTextEncode), so their inputs and display
names are read from a real ComfyUI: $COMFYUI_PATH, else ../shared/comfyui beside the checkout. Every .json file in
workflows/comfyui/api/ gets its UI file. --check only reports UI files that are missing or out of date (exit 1), which
the tests also verify.
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for _folder in (os.path.dirname(HERE), HERE, os.path.join(os.path.dirname(HERE), "tests")):
    if _folder not in sys.path:  # appended: loaded by a test, this changes nothing the session already finds
        sys.path.append(_folder)

from build_ui_workflows import build, lay_out  # noqa: E402
from pack_import import ROOT, import_pack  # noqa: E402

FOLDER = os.path.join(ROOT, "workflows", "comfyui")
# Groups of the graphs that have stages, as build_ui_workflows.GROUPS: {API file name: [(title, node ids)]}.
GROUPS: dict[str, list[tuple[str, list[str]]]] = {}


def api_files() -> list[str]:
    return sorted(glob.glob(os.path.join(FOLDER, "api", "*.json")))


def ui_path(api_path: str) -> str:
    """The UI file of an API workflow file: same name, one folder up."""
    return os.path.join(FOLDER, os.path.basename(api_path))


def node_classes() -> dict[str, type]:
    """ComfyUI's core node classes with the pack's nodes (import ComfyUI first: tests/comfy_env.py)."""
    import comfy_env

    return {**comfy_env.comfy_nodes().NODE_CLASS_MAPPINGS, **import_pack().NODE_CLASS_MAPPINGS}


def display_names() -> dict[str, str]:
    """The node classes' display names as the frontend gets them: ComfyUI's NODE_DISPLAY_NAME_MAPPINGS, into which
    ComfyUI merges every loaded pack's (the pack's own here)."""
    import comfy_env

    return {**comfy_env.comfy_nodes().NODE_DISPLAY_NAME_MAPPINGS, **import_pack().NODE_DISPLAY_NAME_MAPPINGS}


def ui_workflows(classes: dict[str, type], names: dict[str, str] | None = None) -> dict[str, dict]:
    """{UI file path: UI workflow} for every API workflow in workflows/comfyui/api/; `names`: display names of the
    classes (default: `display_names()`)."""
    from longvideo.utils.workflow import api_to_ui, load_workflow

    names = display_names() if names is None else names
    built = {}
    for path in api_files():
        api = load_workflow(path, classes)
        name = os.path.splitext(os.path.basename(path))[0]
        built[ui_path(path)] = lay_out(api_to_ui(api, classes), api, classes, GROUPS.get(name, []), names)
    return built


def main() -> int:
    return build(__doc__, lambda: ui_workflows(node_classes()))


if __name__ == "__main__":
    sys.exit(main())
