"""Make the template thumbnails: run each shipped workflow and write a strip of its real output frames.

    python tools/make_thumbnails.py                       # every workflow (a few minutes of CPU)
    python tools/make_thumbnails.py --only text_to_video  # one of them
    python tools/make_thumbnails.py --videos DIR          # reuse videos these workflows already saved in DIR
    python tools/make_thumbnails.py --only continuation --strips docs/strips   # also the README's strip of its video

ComfyUI lists the pack's workflows/ files under Templates and shows `<name>.jpg` beside each `<name>.json` as its
thumbnail. Each thumbnail is frames taken evenly over the workflow's video, left to right and top to bottom
(COLUMNS x ROWS, each frame scaled to CELL pixels); a workflow that saves two videos (interpolation) gets one row
per video. Re-run it whenever the embedded model or a workflow changes. --strips DIR also writes DIR/<workflow>.png:
each video's frames in one row, STRIP_FRAMES of them taken evenly over its whole length, at their own size.
"""

import argparse
import glob
import importlib.util
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pack_import import ROOT, import_pack  # noqa: E402

COLUMNS, ROWS = 4, 2
CELL = 128
GAP = 4
BACKGROUND = (24, 24, 24)
QUALITY = 90
STRIP_FRAMES = 30


def _builder():
    spec = importlib.util.spec_from_file_location("build_ui_workflows", os.path.join(ROOT, "tools", "build_ui_workflows.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_frames(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def pick(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` frames spread evenly from the first to the last."""
    return frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]


def strip(videos: list[np.ndarray]) -> np.ndarray:
    """The thumbnail (uint8 RGB): one video fills COLUMNS x ROWS cells in reading order; several take a row each."""
    import cv2

    rows = [pick(videos[0], COLUMNS * ROWS)[r * COLUMNS:(r + 1) * COLUMNS] for r in range(ROWS)] if len(videos) == 1 \
        else [pick(video, COLUMNS) for video in videos]
    height, width = len(rows) * (CELL + GAP) + GAP, COLUMNS * (CELL + GAP) + GAP
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            cell = cv2.resize(frame, (CELL, CELL), interpolation=cv2.INTER_NEAREST if frame.shape[0] <= CELL else cv2.INTER_AREA)
            y, x = GAP + r * (CELL + GAP), GAP + c * (CELL + GAP)
            image[y:y + CELL, x:x + CELL] = cell
    return image


def one_row(videos: list[np.ndarray]) -> np.ndarray:
    """A row of STRIP_FRAMES frames per video, taken evenly over its length, rows stacked (uint8 RGB)."""
    rows = [np.concatenate(list(pick(video, min(STRIP_FRAMES, len(video)))), axis=1) for video in videos]
    width = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])


def saved_videos(api: dict, folder: str) -> list[str]:
    """The newest video each save node of `api` wrote under `folder`, in the workflow's node order."""
    paths = []
    for node in api.values():
        if node["class_type"] != "LongVideoSaveVideo":
            continue
        prefix = node["inputs"]["filename_prefix"]
        fmt = node["inputs"].get("format", "mp4")
        matches = sorted(glob.glob(os.path.join(folder, f"{prefix}_[0-9]*.{fmt}")))
        if not matches:
            raise SystemExit(f"no video {prefix}_*.{fmt} under {folder}: run the workflow, or leave out --videos")
        paths.append(matches[-1])
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="API workflow names (workflows/api/NAME.json)")
    parser.add_argument("--videos", help="a folder holding videos the workflows already saved (their output folder)")
    parser.add_argument("--strips", help="also write FOLDER/<workflow>.png, each video's frames in one row")
    args = parser.parse_args(argv)

    pack = import_pack()
    from longvideo.utils.workflow import load_workflow, run_workflow

    import cv2

    builder = _builder()
    api_files = sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))
    if args.only:
        unknown = set(args.only) - {os.path.splitext(os.path.basename(p))[0] for p in api_files}
        if unknown:
            raise SystemExit(f"no workflow named {', '.join(sorted(unknown))} in workflows/api")
        api_files = [p for p in api_files if os.path.splitext(os.path.basename(p))[0] in args.only]
    for api_file in api_files:
        api = load_workflow(api_file, pack.NODE_CLASS_MAPPINGS)
        if args.videos:
            videos = saved_videos(api, args.videos)
        else:
            folder = tempfile.mkdtemp(prefix="longvideo-thumbnail-")
            os.environ["LONGVIDEO_OUTPUT_DIR"] = folder
            print(f"running {os.path.relpath(api_file, ROOT)} ...", flush=True)
            run_workflow(api, pack.NODE_CLASS_MAPPINGS)
            videos = saved_videos(api, folder)
        frames = [read_frames(path) for path in videos]
        target = os.path.splitext(builder.ui_path(api_file))[0] + ".jpg"
        cv2.imwrite(target, cv2.cvtColor(strip(frames), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        print(f"wrote {os.path.relpath(target, ROOT)}", flush=True)
        if args.strips:
            os.makedirs(args.strips, exist_ok=True)
            target = os.path.join(args.strips, os.path.splitext(os.path.basename(api_file))[0] + ".png")
            cv2.imwrite(target, cv2.cvtColor(one_row(frames), cv2.COLOR_RGB2BGR))
            print(f"wrote {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
