"""Run a workflow of this pack's nodes without ComfyUI.

    python run_workflow.py workflows/api/text_to_video.json [--output-dir DIR] [--models-dir DIR]
                           [--set NODE.INPUT=VALUE ...] [--resume PARTIAL.latent]

Takes the API format (ComfyUI's "Export (API)") or the UI format (the editor's "Save"), checks it
against the node definitions, and runs the nodes in dependency order with the same node classes ComfyUI
uses. Files go to --output-dir (default ./output); models are looked up in --models-dir (default: the
pack's weights/ folder). --set overrides a widget value, e.g. --set 3.frames=64 --set 1.model_path=/models/zeroscope;
the value is read as JSON (numbers, true/false) except for text inputs, which take it as written (--set 7.devices=0, 1).

Stopping: Ctrl+C and SIGTERM (kill, timeout, docker stop, systemd) both stop the run the same way: the long samplers
save their finished chunks as a .latent, half-written files are removed, and the exit status is 130 or 143.
--resume PARTIAL carries a stopped continuation on: the workflow's continuation sampler starts from that
<prefix>_partial_*.latent (a LongVideoLoadLatent node in its start_latent), and with the settings it ran with makes
the video the uninterrupted run would have made.

Errors: a workflow that does not validate exits with status 2, a node that fails while running with status 3; both
print one line (the node and the message; --verbose adds the traceback).

Threads: --threads N sets torch's CPU threads (default: torch's own, one per core). A seed reproduces a video at a
given thread count: CPU kernels split their sums by thread, so another count rounds differently (up to a few levels
of 255 per pixel after many steps). On a machine busy with other work, fewer threads than cores is faster; the
runner says so when the load is high.
"""

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback

from pack_import import import_pack


def parse_override(text: str) -> tuple[str, str, str]:
    target, separator, raw = text.partition("=")
    node_id, dot, name = target.partition(".")
    if not separator or not dot or not node_id or not name:
        raise SystemExit(f"--set {text!r}: write it as NODE_ID.INPUT=VALUE, e.g. --set 3.frames=64")
    return node_id, name, raw


def override_value(raw: str, input_type) -> object:
    """The value of `--set X.NAME=raw` for an input of `input_type`: text inputs take the text as it is (so
    "devices=0" stays the string "0"), others read it as JSON (numbers, true/false, lists), else as text."""
    if input_type == "STRING":
        return raw
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(value, str) and isinstance(input_type, (list, tuple)) and raw in input_type:
        return raw
    return value


def apply_override(prompt: dict, nodes: dict, text: str, workflow: str, error_type) -> None:
    node_id, name, raw = parse_override(text)
    node = prompt.get(node_id)
    if node is None:
        raise error_type(f"--set names node {node_id}, which is not in {workflow}")
    inputs = node.setdefault("inputs", {})
    if not isinstance(inputs, dict):
        raise error_type(f"--set {text}: node {node_id} has 'inputs' of type {type(inputs).__name__}, not a dict of "
                         "input name to value - fix the workflow file")
    cls = nodes.get(node.get("class_type")) if isinstance(node.get("class_type"), str) else None
    types = cls.INPUT_TYPES() if cls is not None else {}
    entry = {**(types.get("required") or {}), **(types.get("optional") or {})}.get(name)
    input_type = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
    inputs[name] = override_value(raw, input_type)


RESUMABLE = "LongVideoContinuationSampler"


def resume_from(prompt: dict, partial: str, workflow: str, error_type) -> None:
    """Start the workflow's continuation sampler from `partial`: a LongVideoLoadLatent node into its start_latent (in
    place of a start clip or image, which the partial already begins with)."""
    samplers = [node_id for node_id, node in prompt.items() if node.get("class_type") == RESUMABLE]
    if len(samplers) != 1:
        raise error_type(f"--resume needs one {RESUMABLE} in {workflow} to carry on, found {len(samplers)}"
                         + (f" (nodes {', '.join(samplers)})" if samplers else ""))
    numbers = [int(node_id) for node_id in prompt if str(node_id).isdigit()]
    loader = str(max(numbers, default=0) + 1)
    prompt[loader] = {"class_type": "LongVideoLoadLatent", "inputs": {"path": os.path.abspath(partial)}}
    inputs = prompt[samplers[0]].setdefault("inputs", {})
    inputs.pop("start_image", None)
    inputs.update(start_latent=[loader, 0], resume=True)


# Seconds a stop waits for the main thread to answer before the watchdog saves the finished chunks and exits.
STOP_GRACE_S = float(os.environ.get("LONGVIDEO_STOP_GRACE_S", "10"))


def _stop_on_sigterm():
    """Headless, SIGTERM does what Ctrl+C does: a KeyboardInterrupt in the main thread, which the samplers and
    writers answer by keeping finished work and removing half-written files. A second SIGTERM while that cleanup
    runs is ignored (SIGKILL still ends everything). Python sees a signal only between operations, so a watchdog
    thread also hears it: if the main thread is still inside one long model call STOP_GRACE_S later, the watchdog
    saves the samplers' finished chunks itself and ends the process."""
    answered = threading.Event()

    def on_sigterm(signum, frame):
        answered.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    def on_sigint(signum, frame):
        answered.set()
        raise KeyboardInterrupt

    handlers = signal.signal(signal.SIGTERM, on_sigterm), signal.signal(signal.SIGINT, on_sigint)
    heard, wakeup = socket.socketpair()
    wakeup.setblocking(False)
    previous = signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=_watchdog, args=(heard, answered), daemon=True).start()

    def restore():  # for callers that go on after main() (tests): handlers back, the watchdog ended
        signal.set_wakeup_fd(previous)
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        wakeup.close()

    return restore


def _watchdog(heard, answered) -> None:
    while True:
        data = heard.recv(1)
        if not data:
            heard.close()
            return
        if data[0] not in (signal.SIGTERM, signal.SIGINT) or answered.wait(STOP_GRACE_S):
            continue
        from longvideo.utils.stop_keepers import keep_all

        name = "SIGTERM" if data[0] == signal.SIGTERM else "Ctrl+C"
        kept = keep_all()
        where = f"; the finished chunks are in {', '.join(kept)}" if kept else ""
        print(f"stopped by {name}: the run was inside one model call {STOP_GRACE_S:.0f} s later and did not wait for "
              f"it{where}", file=sys.stderr, flush=True)
        os._exit(128 + data[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="a workflow JSON file (API or UI format)")
    parser.add_argument("--output-dir", default="output", help="where videos are written (default: ./output)")
    parser.add_argument("--models-dir", action="append", help="a folder holding model folders (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override one input of one node (repeatable)")
    parser.add_argument("--resume", metavar="PARTIAL", help="carry on a stopped continuation from its _partial_*.latent")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a node's error")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads {args.threads}: give 1 or more (0: torch's own)")
    restore = _stop_on_sigterm()
    try:
        return _run(args)
    except KeyboardInterrupt as interrupt:
        terminated = bool(interrupt.args) and interrupt.args[0] == "SIGTERM"
        print(f"stopped by {'SIGTERM' if terminated else 'Ctrl+C'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        restore()


def _set_threads(threads: int) -> str | None:
    """Set torch's CPU threads; a note for the log when torch's own count meets a busy machine."""
    import torch

    if threads:
        torch.set_num_threads(threads)
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if torch.get_num_threads() > 1 and load > cores / 2:
        return (f"note: the machine is busy (load {load:.1f} on {cores} cores); --threads 1 (or fewer threads than "
                f"{torch.get_num_threads()}) may be much faster here. A seed reproduces a video at a given thread count.")
    return None


def _run(args) -> int:
    note = _set_threads(args.threads)
    os.environ["LONGVIDEO_OUTPUT_DIR"] = os.path.abspath(args.output_dir)
    if args.models_dir:
        os.environ["LONGVIDEO_MODELS_DIR"] = os.pathsep.join(os.path.abspath(d) for d in args.models_dir)

    pack = import_pack()
    _show_pack_log(pack.__name__)
    from longvideo.utils.workflow import WorkflowError, load_workflow, run_workflow

    nodes = pack.NODE_CLASS_MAPPINGS
    started = {}
    try:
        prompt = load_workflow(args.workflow, nodes)
        for text in args.overrides:
            apply_override(prompt, nodes, text, args.workflow, WorkflowError)
        if args.resume:
            resume_from(prompt, args.resume, args.workflow, WorkflowError)

        def on_start(node_id, class_type):
            if not started and note:
                print(note, file=sys.stderr)
            started[node_id] = time.perf_counter()
            print(f"[{node_id}] {class_type} ...", file=sys.stderr, flush=True)

        def on_done(node_id, class_type, outputs):
            print(f"[{node_id}] {class_type} done in {time.perf_counter() - started[node_id]:.1f} s", file=sys.stderr, flush=True)

        results = run_workflow(prompt, nodes, on_node_start=on_start, on_node_done=on_done)
    except WorkflowError as error:
        if started:  # raised after a node ran: that node's fault, not the workflow's shape
            return _node_failed(error, started, prompt, args.verbose)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a node failed while running: its message, not a traceback (unless --verbose)
        if not started:
            raise
        return _node_failed(error, started, prompt, args.verbose)
    for ui in results.values():
        for item in ui.get("images", []):
            print(os.path.join(args.output_dir, item.get("subfolder", ""), item["filename"]))
    return 0


class _ToStderr(logging.Handler):
    def emit(self, record):
        print(self.format(record), file=sys.stderr, flush=True)


def _show_pack_log(name: str) -> None:
    """The pack's own log lines (where a partial was kept, the estimated time left, which conditioning 'learned'
    uses) on stderr, as ComfyUI shows them in its console."""
    logger = logging.getLogger(name)
    if not any(isinstance(handler, _ToStderr) for handler in logger.handlers):
        logger.addHandler(_ToStderr())
        logger.setLevel(logging.INFO)


def _node_failed(error: Exception, started: dict, prompt: dict, verbose: bool) -> int:
    node_id = list(started)[-1]
    message = str(error) or type(error).__name__
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    print(f"error in node {node_id} ({prompt[node_id]['class_type']}): {message}", file=sys.stderr)
    if not verbose:
        print("(run with --verbose for the traceback)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
