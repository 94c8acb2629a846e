#!/usr/bin/env python3
"""Smoke-test this node pack inside a real ComfyUI installation.

The script writes nothing into the ComfyUI checkout it is given. It:

1. creates a temporary work directory holding
   * ``custom_nodes/ComfyUI-LongVideo`` -> a symlink to the pack
     (by default the repository root, i.e. the parent of ``tools/``),
   * ``models/diffusers/<name>`` -> symlinks to any ``--model-dir`` folders,
   * ``extra_model_paths.yaml`` registering both folders with ComfyUI,
   * fresh input / output / temp / user directories;
2. starts ``python main.py --cpu --listen 127.0.0.1 --port <free port> ...``
   in the ComfyUI directory, with its output captured in a log file;
3. waits (bounded) for ``GET /system_stats`` to answer;
4. fails if the log shows that the pack did not import, then lists the
   pack's nodes from ``GET /object_info`` (fails if there are none);
5. queues every ``--workflow`` (API format) with ``POST /prompt``, polls
   ``GET /history/<prompt_id>`` until it finishes (bounded by ``--timeout``)
   and prints each output node's ``ui`` dict, or the validation errors /
   exception and traceback when it fails;
6. stops the server and prints a one-line summary.

Only loopback networking (127.0.0.1) and the Python standard library are used.

Examples::

    python tools/comfyui_smoke.py --comfyui /work/ComfyUI
    python tools/comfyui_smoke.py --comfyui /work/ComfyUI \\
        --workflow workflows/api/minimal.json \\
        --model-dir /models/tiny-pipeline --timeout 900 --keep-log

Exit status: 0 when everything passed, 1 on any failure, 2 on bad usage.

Preparing a CPU-only ComfyUI for it (done once per machine, outside this
repository): check ComfyUI out (e.g. to /work/ComfyUI), then install its
requirements without the torch/torchvision/torchaudio lines, keeping the
installed CPU torch pinned::

    grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$' requirements.txt \
        | grep -v spandrel > /tmp/comfy-req.txt
    pip install -c <(echo "torch==$(python -c 'import torch; print(torch.__version__)')") \
        -r /tmp/comfy-req.txt

Without torchvision, the few ``import torchvision`` lines in comfy/ldm/
(cascade, cosmos, ace) must be wrapped in ``try/except ImportError`` in that
local checkout; the audio nodes then fail to import, which is harmless here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PACK_LINK_NAME = "ComfyUI-LongVideo"
REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LOG_TAIL_LINES = 80


class SmokeFailure(Exception):
    """A check failed; the message says which."""


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# HTTP helpers (loopback only)
# --------------------------------------------------------------------------

class Client:
    """Minimal JSON client for the ComfyUI HTTP API on 127.0.0.1."""

    def __init__(self, port: int):
        self.base = f"http://{HOST}:{port}"
        # Never route loopback requests through a proxy from the environment.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, payload=None, timeout: float = 30.0):
        """Return (status, decoded JSON or raw text)."""
        data = None
        headers = {}
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        text = body.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str, timeout: float = 30.0):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, payload, timeout: float = 30.0):
        return self.request("POST", path, payload, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Work directory and server process
# --------------------------------------------------------------------------

def yaml_str(value: str) -> str:
    """Quote a path as a YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(str(value))


def prepare_workdir(work: Path, pack: Path, model_dirs: list[Path], link_name: str) -> Path:
    """Lay out the temporary ComfyUI side tree; return the extra_model_paths.yaml path."""
    nodes_dir = work / "custom_nodes"
    nodes_dir.mkdir()
    (nodes_dir / link_name).symlink_to(pack, target_is_directory=True)
    for name in ("input", "output", "temp", "user"):
        (work / name).mkdir()

    lines = ["comfyui_smoke:", f"    custom_nodes: {yaml_str(nodes_dir)}"]
    if model_dirs:
        diffusers_dir = work / "models" / "diffusers"
        diffusers_dir.mkdir(parents=True)
        for model in model_dirs:
            link = diffusers_dir / model.name
            if link.exists() or link.is_symlink():
                raise SmokeFailure(f"two --model-dir folders share the name {model.name!r}")
            link.symlink_to(model, target_is_directory=True)
        lines.append(f"    diffusers: {yaml_str(diffusers_dir)}")
    config = work / "extra_model_paths.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def supported_flags(comfyui: Path) -> set[str]:
    """Return which optional command-line flags this ComfyUI version defines."""
    wanted = ("--output-directory", "--input-directory", "--temp-directory",
              "--user-directory", "--database-url", "--disable-api-nodes")
    try:
        text = (comfyui / "comfy" / "cli_args.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for flag in wanted if f'"{flag}"' in text or f"'{flag}'" in text}


def server_command(args, comfyui: Path, work: Path, config: Path, port: int) -> list[str]:
    flags = supported_flags(comfyui)
    cmd = [args.python, "main.py", "--cpu", "--listen", HOST, "--port", str(port),
           "--extra-model-paths-config", str(config)]
    optional = {
        "--output-directory": str(args.output_dir or work / "output"),
        "--input-directory": str(work / "input"),
        "--temp-directory": str(work / "temp"),
        "--user-directory": str(work / "user"),
        "--database-url": f"sqlite:///{work / 'user' / 'comfyui.db'}",
    }
    for flag, value in optional.items():
        if flag in flags:
            cmd += [flag, value]
    if "--disable-api-nodes" in flags:
        cmd.append("--disable-api-nodes")
    for extra in args.comfy_arg:
        cmd += extra.split()
    return cmd


def stop_server(proc: subprocess.Popen | None) -> None:
    """Terminate the server; kill its whole process group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group started for this server only
    except (OSError, AttributeError):
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"warning: server pid {proc.pid} did not exit after SIGKILL")


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read log {log_path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(client: Client, proc: subprocess.Popen, limit: float) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SmokeFailure(f"ComfyUI exited during start-up with code {proc.returncode}")
        try:
            status, body = client.get("/system_stats", timeout=5)
            if status == 200 and isinstance(body, dict):
                return body
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise SmokeFailure(f"ComfyUI did not answer GET /system_stats within {limit:.0f}s")


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def check_import_log(log_path: Path, link_name: str, work: Path) -> None:
    """Fail when the start-up log shows the pack failed to load."""
    pack_path = str(work / "custom_nodes" / link_name)
    bad = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        mentions_pack = link_name in line or pack_path in line
        if not mentions_pack:
            continue
        if ("IMPORT FAILED" in line or "Cannot import" in line
                or "PRESTARTUP FAILED" in line
                or ("Skip" in line and "NODE_CLASS_MAPPINGS" in line)):
            bad.append(line.strip())
    if bad:
        raise SmokeFailure("the pack failed to import:\n    " + "\n    ".join(bad))


def list_pack_nodes(client: Client, link_name: str) -> dict:
    status, info = client.get("/object_info", timeout=120)
    if status != 200 or not isinstance(info, dict):
        raise SmokeFailure(f"GET /object_info answered HTTP {status}")
    module = f"custom_nodes.{link_name}"
    ours = {name: spec for name, spec in info.items()
            if isinstance(spec, dict) and spec.get("python_module") == module}
    if not ours:
        raise SmokeFailure(f"no node in /object_info has python_module {module!r} "
                           f"({len(info)} nodes listed in all)")
    log(f"{len(ours)} node(s) from {module} (of {len(info)} in all):")
    for name in sorted(ours):
        spec = ours[name]
        outputs = ", ".join(str(o) for o in spec.get("output", [])) or "-"
        flag = "  [output node]" if spec.get("output_node") else ""
        log(f"  {name}  ({spec.get('display_name', name)}) -> {outputs}{flag}")
    return ours


def load_workflow(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SmokeFailure(f"cannot read workflow {path}: {exc}")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if not isinstance(data, dict) or ("nodes" in data and "links" in data):
        raise SmokeFailure(f"{path} is not an API-format workflow "
                           "(export it with 'Export (API)' in the ComfyUI menu)")
    bad = [k for k, v in data.items() if not (isinstance(v, dict) and "class_type" in v)]
    if bad:
        raise SmokeFailure(f"{path}: entries without class_type: {', '.join(map(str, bad[:5]))}")
    return data


def format_prompt_error(body) -> str:
    if not isinstance(body, dict):
        return str(body)[:4000]
    out = []
    err = body.get("error")
    if isinstance(err, dict):
        out.append(f"{err.get('type', 'error')}: {err.get('message', '')}")
        if err.get("details"):
            out.append(f"  details: {err['details']}")
    elif err:
        out.append(str(err))
    for node_id, node_err in (body.get("node_errors") or {}).items():
        out.append(f"  node {node_id} ({node_err.get('class_type', '?')}):")
        for e in node_err.get("errors", []):
            line = f"    - {e.get('type', '')}: {e.get('message', '')}"
            if e.get("details"):
                line += f" [{e['details']}]"
            out.append(line)
            extra = e.get("extra_info") or {}
            if extra.get("input_name"):
                out.append(f"      input: {extra['input_name']}")
    return "\n".join(out) or json.dumps(body)[:4000]


def format_execution_error(messages) -> str:
    out = []
    for item in messages or []:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            continue
        event, data = item
        if event == "execution_error" and isinstance(data, dict):
            out.append(f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                       f"{data.get('exception_type')}: {data.get('exception_message')}")
            trace = data.get("traceback") or []
            if trace:
                out.append("".join(trace).rstrip())
        elif event == "execution_interrupted":
            out.append(f"execution interrupted at node {data.get('node_id')} ({data.get('node_type')})")
    return "\n".join(out) or "(no execution_error message in the history)"


def run_workflow(client: Client, path: Path, api: dict, timeout: float) -> dict:
    client_id = uuid.uuid4().hex
    status, body = client.post("/prompt", {"prompt": api, "client_id": client_id})
    if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
        raise SmokeFailure(f"POST /prompt rejected {path.name} (HTTP {status}):\n"
                           + format_prompt_error(body))
    if body.get("node_errors"):
        log("  warning: node_errors in an accepted prompt:\n" + format_prompt_error(body))
    prompt_id = body["prompt_id"]
    log(f"  queued as {prompt_id}")

    started = time.monotonic()
    delay = 0.25
    entry = None
    while time.monotonic() - started < timeout:
        try:
            status, hist = client.get(f"/history/{prompt_id}")
        except OSError as exc:
            raise SmokeFailure(f"lost the connection to ComfyUI while {path.name} ran: {exc}")
        if status == 200 and isinstance(hist, dict) and prompt_id in hist:
            entry = hist[prompt_id]
            state = entry.get("status") or {}
            if state.get("completed") or state.get("status_str") in ("success", "error"):
                break
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    else:
        try:
            client.post("/interrupt", {})
        except OSError:
            pass
        raise SmokeFailure(f"{path.name} did not finish within {timeout:.0f}s (interrupt sent)")

    elapsed = time.monotonic() - started
    state = entry.get("status") or {}
    if state.get("status_str") == "error" or not state.get("completed", True):
        raise SmokeFailure(f"{path.name} failed after {elapsed:.1f}s:\n"
                           + format_execution_error(state.get("messages")))
    outputs = entry.get("outputs") or {}
    log(f"  finished in {elapsed:.1f}s, status {state.get('status_str', '?')}, "
        f"{len(outputs)} output node(s)")
    for node_id in sorted(outputs, key=str):
        class_type = (api.get(node_id) or {}).get("class_type", "?")
        text = json.dumps(outputs[node_id], indent=2, default=str)
        log(f"  ui of node {node_id} ({class_type}):")
        log("\n".join("    " + line for line in text.splitlines()))
    return outputs


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def resolve_existing(path_text: str, what: str, bases: list[Path]) -> Path:
    path = Path(path_text).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path] + [b / path for b in bases]
    for cand in candidates:
        if cand.exists():
            return cand.resolve()
    raise SmokeFailure(f"{what} not found: {path_text}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Start ComfyUI on the CPU with this node pack linked in, check "
                    "that the pack imports and run API-format workflows through it.")
    default_comfyui = os.environ.get("COMFYUI_DIR")
    p.add_argument("--comfyui", default=default_comfyui, required=default_comfyui is None,
                   help="ComfyUI checkout, the folder with main.py (default: $COMFYUI_DIR)")
    p.add_argument("--pack", default=str(REPO_ROOT),
                   help="node pack folder to link in (default: this repository, %(default)s)")
    p.add_argument("--link-name", default=PACK_LINK_NAME,
                   help="folder name the pack gets under custom_nodes/ (default: %(default)s)")
    p.add_argument("--workflow", action="append", default=[], metavar="JSON",
                   help="API-format workflow to run (repeatable; relative paths are tried "
                        "from the current directory, then the pack, then this repository)")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="folder to expose as models/diffusers/<basename> (repeatable)")
    p.add_argument("--input-file", action="append", default=[], metavar="FILE",
                   help="file to copy into ComfyUI's input directory (repeatable)")
    p.add_argument("--output-dir", default=None,
                   help="keep outputs here instead of the temporary output directory")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds allowed for each workflow (default: %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds allowed for the server to answer (default: %(default)s)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter that runs ComfyUI (default: this one)")
    p.add_argument("--comfy-arg", action="append", default=[], metavar="ARGS",
                   help="extra argument(s) for main.py, e.g. --comfy-arg='--verbose DEBUG'")
    p.add_argument("--keep-log", action="store_true",
                   help="keep the server log and print its path")
    p.add_argument("--keep-temp", action="store_true",
                   help="keep the temporary work directory (outputs, config) and print its path")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    comfyui = Path(args.comfyui).expanduser().resolve()
    if not (comfyui / "main.py").is_file():
        print(f"error: {comfyui} has no main.py", file=sys.stderr)
        return 2
    try:
        pack = resolve_existing(args.pack, "pack folder", [])
        model_dirs = [resolve_existing(m, "--model-dir", []) for m in args.model_dir]
        workflows = [resolve_existing(w, "workflow", [pack, REPO_ROOT]) for w in args.workflow]
        apis = [load_workflow(w) for w in workflows]
        inputs = [resolve_existing(f, "--input-file", [pack]) for f in args.input_file]
    except SmokeFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (pack / "__init__.py").is_file():
        log(f"warning: {pack} has no __init__.py; ComfyUI will not be able to import it")
    if (comfyui / "custom_nodes" / args.link_name).exists():
        log(f"warning: {comfyui}/custom_nodes/{args.link_name} exists too; "
            "ComfyUI will load both copies")

    work = Path(tempfile.mkdtemp(prefix="comfyui_smoke_"))
    log_fd, log_name = tempfile.mkstemp(prefix="comfyui_smoke_", suffix=".log")
    os.close(log_fd)
    log_path = Path(log_name)
    proc = None
    ok = False
    summary = ""
    nodes: dict = {}
    done = 0
    try:
        config = prepare_workdir(work, pack, model_dirs, args.link_name)
        for f in inputs:
            shutil.copy2(f, work / "input" / f.name)
        if args.output_dir:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        port = free_port()
        cmd = server_command(args, comfyui, work, config, port)
        log(f"work dir: {work}")
        log(f"starting: (cd {comfyui} && {' '.join(cmd)})")
        # Unbuffered so the log is current; no bytecode written into the linked pack.
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, cwd=comfyui, stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        client = Client(port)
        stats = wait_until_ready(client, proc, args.startup_timeout)
        system = stats.get("system", {})
        log(f"ComfyUI {system.get('comfyui_version', '?')} (torch {system.get('pytorch_version', '?')}) "
            f"answered on {HOST}:{port} after {time.monotonic() - t0:.1f}s")

        check_import_log(log_path, args.link_name, work)
        nodes = list_pack_nodes(client, args.link_name)

        for wf, api in zip(workflows, apis):
            log(f"workflow {wf}:")
            run_workflow(client, wf, api, args.timeout)
            done += 1
        ok = True
        summary = (f"comfyui_smoke: OK: {len(nodes)} node(s) from {args.link_name}, "
                   f"{done}/{len(workflows)} workflow(s) passed in {time.monotonic() - t0:.1f}s")
    except (SmokeFailure, OSError) as exc:
        if not isinstance(exc, SmokeFailure):
            exc = SmokeFailure(f"{type(exc).__name__}: {exc}")
        log(f"FAILED: {exc}")
        if proc is not None:
            try:
                proc.wait(timeout=2)  # a crashed server may still be going down
                log(f"(the ComfyUI process exited with code {proc.returncode})")
            except subprocess.TimeoutExpired:
                pass
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        headline = lines[0] if lines else "unknown failure"
        if headline.endswith(":") and len(lines) > 1:
            headline += " " + lines[1]
        summary = (f"comfyui_smoke: FAIL: {headline} "
                   f"({len(nodes)} node(s), {done}/{len(workflows)} workflow(s) passed)")
    except KeyboardInterrupt:
        summary = "comfyui_smoke: FAIL: interrupted"
    finally:
        stop_server(proc)
        if not ok:
            log(f"--- last {LOG_TAIL_LINES} lines of the server log ({log_path}) ---")
            log(log_tail(log_path))
            log("--- end of log ---")
        if args.keep_log or not ok:
            log(f"server log: {log_path}")
        else:
            log_path.unlink(missing_ok=True)
        if args.keep_temp:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if summary:
            log(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
