"""Regenerate the UI-format workflows for ComfyUI's own video models (workflows/comfyui/*.json) from the API-format
ones (workflows/comfyui/api/*.json), like tools/build_ui_workflows.py does for the pack's own models.

    COMFYUI_PATH=../shared/comfyui python tools/build_comfy_workflows.py [--check]

These graphs use ComfyUI's core nodes (UNETLoader, CLIPLoader, VAELoader, CLIPTextEncode), so their inputs are read
from a real ComfyUI: $COMFYUI_PATH, else ../shared/comfyui beside the checkout. --check only reports UI files that are
missing or out of date (exit 1), which the tests also verify.
"""

import argparse
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE, os.path.join(os.path.dirname(HERE), "tests")]

from build_ui_workflows import serialise  # noqa: E402
from pack_import import ROOT, import_pack  # noqa: E402

FOLDER = os.path.join(ROOT, "workflows", "comfyui")


def node_classes() -> dict[str, type]:
    """ComfyUI's core node classes with the pack's nodes (import ComfyUI first: tests/comfy_env.py)."""
    import comfy_env

    comfy_env.import_comfy()
    import nodes as comfy_nodes

    return {**comfy_nodes.NODE_CLASS_MAPPINGS, **import_pack().NODE_CLASS_MAPPINGS}


def ui_workflows(classes: dict[str, type]) -> dict[str, dict]:
    from longvideo.utils.workflow import api_to_ui, load_workflow

    return {os.path.join(FOLDER, os.path.basename(path)): api_to_ui(load_workflow(path, classes), classes)
            for path in sorted(glob.glob(os.path.join(FOLDER, "api", "*.json")))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date UI files instead of writing them")
    args = parser.parse_args()
    stale = []
    for path, workflow in ui_workflows(node_classes()).items():
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
