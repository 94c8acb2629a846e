"""Regenerate the UI-format workflows for ComfyUI's own video models (workflows/comfyui/*.json) from the API-format
ones (workflows/comfyui/api/*.json), like tools/build_ui_workflows.py does for the pack's own models.

    COMFYUI_PATH=../shared/comfyui python tools/build_comfy_workflows.py [--check]

These graphs use ComfyUI's core nodes (UNETLoader, CLIPLoader, VAELoader, CLIPTextEncode), so their inputs are read
from a real ComfyUI: $COMFYUI_PATH, else ../shared/comfyui beside the checkout. --check only reports UI files that are
missing or out of date (exit 1), which the tests also verify.
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE, os.path.join(os.path.dirname(HERE), "tests")]

from build_ui_workflows import build  # noqa: E402
from pack_import import ROOT, import_pack  # noqa: E402

FOLDER = os.path.join(ROOT, "workflows", "comfyui")


def node_classes() -> dict[str, type]:
    """ComfyUI's core node classes with the pack's nodes (import ComfyUI first: tests/comfy_env.py)."""
    import comfy_env

    return {**comfy_env.comfy_nodes().NODE_CLASS_MAPPINGS, **import_pack().NODE_CLASS_MAPPINGS}


def ui_workflows(classes: dict[str, type]) -> dict[str, dict]:
    from longvideo.utils.workflow import api_to_ui, load_workflow

    return {os.path.join(FOLDER, os.path.basename(path)): api_to_ui(load_workflow(path, classes), classes)
            for path in sorted(glob.glob(os.path.join(FOLDER, "api", "*.json")))}


def main() -> int:
    return build(__doc__, lambda: ui_workflows(node_classes()))


if __name__ == "__main__":
    sys.exit(main())
