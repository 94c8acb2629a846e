"""Regenerate the UI-format workflows (workflows/*.json) from the API-format ones (workflows/api/*.json).

    python tools/build_ui_workflows.py [--check]

The API files are the source; the UI files are what users drag into ComfyUI. --check only reports
UI files that are missing or out of date (exit 1), which the tests also verify.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pack_import import ROOT, import_pack  # noqa: E402


def ui_workflows() -> dict[str, dict]:
    """{UI file path: UI workflow} built from every API workflow."""
    pack = import_pack()
    from longvideo.utils.workflow import api_to_ui, load_workflow

    built = {}
    for api_file in sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json"))):
        api = load_workflow(api_file, pack.NODE_CLASS_MAPPINGS)
        built[os.path.join(ROOT, "workflows", os.path.basename(api_file))] = api_to_ui(api, pack.NODE_CLASS_MAPPINGS)
    return built


def serialise(workflow: dict) -> str:
    return json.dumps(workflow, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date UI files instead of writing them")
    args = parser.parse_args()
    stale = []
    for path, workflow in ui_workflows().items():
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
