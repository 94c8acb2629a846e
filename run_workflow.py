"""Run a workflow of this pack's nodes without ComfyUI.

    python run_workflow.py workflows/api/text_to_video.json [--output-dir DIR] [--models-dir DIR]
                           [--set NODE.INPUT=VALUE ...]

Takes the API format (ComfyUI's "Export (API)") or the UI format (the editor's "Save"), checks it
against the node definitions, and runs the nodes in dependency order with the same node classes ComfyUI
uses. Files go to --output-dir (default ./output); models are looked up in --models-dir (default: the
pack's weights/ folder). --set overrides a widget value, e.g. --set 3.frames=64 --set 1.model_path=/models/zeroscope.
"""

import argparse
import json
import os
import sys
import time

from pack_import import import_pack


def parse_override(text: str) -> tuple[str, str, object]:
    target, separator, raw = text.partition("=")
    node_id, dot, name = target.partition(".")
    if not separator or not dot or not node_id or not name:
        raise SystemExit(f"--set {text!r}: write it as NODE_ID.INPUT=VALUE, e.g. --set 3.frames=64")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id, name, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="a workflow JSON file (API or UI format)")
    parser.add_argument("--output-dir", default="output", help="where videos are written (default: ./output)")
    parser.add_argument("--models-dir", action="append", help="a folder holding model folders (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override one input of one node (repeatable)")
    args = parser.parse_args(argv)

    os.environ["LONGVIDEO_OUTPUT_DIR"] = os.path.abspath(args.output_dir)
    if args.models_dir:
        os.environ["LONGVIDEO_MODELS_DIR"] = os.pathsep.join(os.path.abspath(d) for d in args.models_dir)

    pack = import_pack()
    from longvideo.utils.workflow import WorkflowError, load_workflow, run_workflow

    nodes = pack.NODE_CLASS_MAPPINGS
    try:
        prompt = load_workflow(args.workflow, nodes)
        for node_id, name, value in map(parse_override, args.overrides):
            if node_id not in prompt:
                raise WorkflowError(f"--set names node {node_id}, which is not in {args.workflow}")
            prompt[node_id]["inputs"][name] = value
        started = {}

        def on_start(node_id, class_type):
            started[node_id] = time.perf_counter()
            print(f"[{node_id}] {class_type} ...", file=sys.stderr, flush=True)

        def on_done(node_id, class_type, outputs):
            print(f"[{node_id}] {class_type} done in {time.perf_counter() - started[node_id]:.1f} s", file=sys.stderr, flush=True)

        results = run_workflow(prompt, nodes, on_node_start=on_start, on_node_done=on_done)
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for ui in results.values():
        for item in ui.get("images", []):
            print(os.path.join(args.output_dir, item.get("subfolder", ""), item["filename"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
