"""ComfyUI workflows without ComfyUI: load, convert, check and run them with the pack's classic (V1) nodes.

Two formats exist. The API format is what ComfyUI's POST /prompt executes:
`{"<id>": {"class_type": "X", "inputs": {"seed": 5, "model": ["4", 0]}, "_meta": {"title": "..."}}}`,
where a link is `[source_node_id, output_index]`. The UI format is what the editor saves: `nodes` with
sockets and positional `widgets_values`, plus a `links` table. Node classes are passed in as a dict
`{class_type: class}`; nothing here imports ComfyUI, torch or the pack's nodes.
"""

import copy
import difflib
import inspect
import json
import math
import os
from collections import Counter
from typing import Any, Callable, NamedTuple

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_NAMES = ("seed", "noise_seed")
# Editor-only node types: notes are dropped, reroutes are followed, primitives leave their value in the
# widget they feed.
VIRTUAL_TYPES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
MUTED, BYPASSED = 2, 4
# Deeper JSON than this is refused before anything walks it: workflows are a few levels deep (subgraphs included).
MAX_NESTING = 100


class WorkflowError(ValueError):
    """A workflow that cannot be converted, validated or run; `problems` lists each problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


# ---------------------------------------------------------------------------------------------------
# node specs


class _Input(NamedTuple):
    name: str
    type: Any  # a type name, or a list of choices (a combo)
    opts: dict
    required: bool

    @property
    def choices(self) -> list | None:
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        return list(self.opts["options"]) if self.type == "COMBO" and "options" in self.opts else None

    @property
    def is_widget(self) -> bool:
        """A value the user types or picks (may still be linked); otherwise it must be linked."""
        return _type_name(self.type) in WIDGET_TYPES

    @property
    def has_slot(self) -> bool:
        """Occupies a place in the UI's widgets_values."""
        return self.is_widget and not self.opts.get("forceInput")

    @property
    def control(self) -> bool:
        """Followed in widgets_values by a UI-only control value ("fixed", "randomize", ...)."""
        flag = self.opts.get("control_after_generate")
        return bool(flag) if flag is not None else (self.name in SEED_NAMES and self.type == "INT")

    @property
    def default(self) -> Any:
        if "default" in self.opts:
            return self.opts["default"]
        if self.choices:
            return self.choices[0]
        return {"INT": self.opts.get("min", 0), "FLOAT": float(self.opts.get("min", 0.0)), "STRING": "",
                "BOOLEAN": False}.get(_type_name(self.type))


def _spec(cls: type) -> tuple[dict[str, _Input], dict[str, str]]:
    """({name: _Input} for required then optional inputs in declared order, {name: hidden kind})."""
    types = cls.INPUT_TYPES()
    inputs = {}
    for section in ("required", "optional"):
        for name, entry in (types.get(section) or {}).items():
            entry = entry if isinstance(entry, (tuple, list)) and entry else (entry,)
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            inputs[name] = _Input(name, entry[0], opts, section == "required")
    hidden = {name: kind[0] if isinstance(kind, (tuple, list)) else kind
              for name, kind in (types.get("hidden") or {}).items()}
    return inputs, hidden


class _Specs(dict):
    """Specs by class_type, computed on first use so INPUT_TYPES() runs once per class."""

    def __init__(self, node_classes: dict[str, type]):
        super().__init__()
        self.node_classes = node_classes

    def __missing__(self, class_type: str):
        value = self[class_type] = _spec(self.node_classes[class_type])
        return value


def _node_class(node_classes: dict, class_type: Any) -> type | None:
    """The class of a class_type, or None when it is unknown or not a string (a list, a number: malformed files)."""
    return node_classes.get(class_type) if isinstance(class_type, str) else None


def _type_name(t: Any) -> str:
    return "COMBO" if isinstance(t, (list, tuple)) else str(t)


def _types_match(a: Any, b: Any) -> bool:
    """Link compatibility: "*" matches anything, "A,B" means either."""
    a, b = _type_name(a), _type_name(b)
    return "*" in (a, b) or bool(set(a.split(",")) & set(b.split(",")))


def _is_link(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def _links(node: dict):
    """(input name, source id, output index) for each linked input of an API node."""
    inputs = node.get("inputs")
    for name, value in (inputs if isinstance(inputs, dict) else {}).items():
        if _is_link(value):
            yield name, str(value[0]), value[1]


def _label(api: dict, node_id: str) -> str:
    node = api.get(node_id)
    return f"node {node_id} ({node.get('class_type', '?') if node is not None else 'missing'})"


def _unknown(kind: str, node_id, class_type, node_classes: dict) -> str:
    close = difflib.get_close_matches(str(class_type), list(node_classes), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"node {node_id} ({class_type}): unknown {kind} - install the node pack that provides it or "
            f"remove the node{hint}")


def _check_api_shape(api: Any) -> None:
    if not isinstance(api, dict) or not api or not all(isinstance(node, dict) for node in api.values()):
        raise WorkflowError("the workflow is empty or not an API-format dict {node_id: {'class_type', 'inputs'}}"
                            " - export it with 'Export (API)' or convert it with ui_to_api()")


def _check_nesting(data: Any, where: str) -> None:
    """Refuse JSON nested deeper than MAX_NESTING (walked without recursion), so nothing later recurses into it."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise WorkflowError(f"{where} is nested more than {MAX_NESTING} levels deep - it is not a ComfyUI workflow")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _check_ui_shape(ui: dict) -> None:
    """One clear error for the first malformed part of an editor workflow (before conversion reads it)."""
    for position, node in enumerate(ui["nodes"]):
        where = f"editor workflow: nodes[{position}]"
        if not isinstance(node, dict):
            raise WorkflowError(f"{where} is a {type(node).__name__}, not a node object - save the workflow again")
        if isinstance(node.get("id"), bool) or not isinstance(node.get("id"), (int, str)):
            raise WorkflowError(f"{where} ({node.get('type', '?')}) has no valid 'id' - save the workflow again from ComfyUI")
        where = f"editor workflow: node {node['id']}"
        if not isinstance(node.get("type"), str):
            raise WorkflowError(f"{where} has 'type' {node.get('type')!r}, not a node type name - save the workflow again")
        if not isinstance(node.get("widgets_values", []), (list, dict, type(None))):
            raise WorkflowError(f"{where} ({node['type']}): 'widgets_values' must be a list - save the workflow again")
        for key in ("inputs", "outputs"):
            sockets = node.get(key) or []
            if not isinstance(sockets, list) or not all(isinstance(s, dict) and isinstance(s.get("name", ""), str)
                                                        for s in sockets):
                raise WorkflowError(f"{where} ({node['type']}): '{key}' must be a list of socket objects - save the "
                                    "workflow again")
        for socket in node.get("inputs") or []:
            if socket.get("link") is not None and "name" not in socket:
                raise WorkflowError(f"{where} ({node['type']}): a linked input has no 'name' - save the workflow again")
    links = ui.get("links") or []
    if not isinstance(links, list):
        raise WorkflowError("editor workflow: 'links' must be a list - save the workflow again")
    fields = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
    for position, link in enumerate(links):
        entry = [link.get(key) for key in fields] if isinstance(link, dict) else link
        if not isinstance(entry, list) or len(entry) < 5 or any(isinstance(v, bool) or v is None for v in entry[:5]) \
                or not isinstance(entry[2], int):
            raise WorkflowError(f"editor workflow: links[{position}] is {str(link)[:60]} - each link needs id, origin node, "
                                "origin slot, target node and target slot; save the workflow again")


# ---------------------------------------------------------------------------------------------------
# formats


def is_ui_format(data: dict) -> bool:
    """True for a workflow saved by the editor (has a "nodes" list), False for the API format."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def _is_api_format(data: Any) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(node, dict) and "class_type" in node for node in data.values()))


def ui_to_api(ui: dict, node_classes: dict[str, type]) -> dict:
    """Convert an editor (UI) workflow to the API format, as the editor's "Queue" does.

    Muted nodes, notes and primitive nodes are dropped (a primitive's value is already in the widget it
    feeds); links are followed through reroutes and bypassed nodes (to the bypassed node's input of the
    same type). An unknown node type raises WorkflowError.
    """
    _check_ui_shape(ui)
    nodes = {node["id"]: node for node in ui.get("nodes", [])}
    links = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):  # schema version 1
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"]]
        try:
            links[link[0]] = (link[1], link[2])
        except TypeError:  # an unhashable id
            raise WorkflowError(f"editor workflow: link id {str(link[0])[:40]} is not a number - save the workflow again") from None

    def source(link_id, where: str):
        """The (node id, output index) really feeding a link, or None for a muted/primitive source. Followed through
        reroutes and bypassed nodes in a loop, so chains of any length work."""
        seen = set()
        while True:
            try:
                known = link_id in links
            except TypeError:
                known = False
            if not known:
                raise WorkflowError(f"{where}: link {str(link_id)[:40]} is missing from the workflow's links table - "
                                    "reconnect the input in the editor and save again")
            node_id, slot = links[link_id]
            try:
                node = nodes.get(node_id)
            except TypeError:
                node = None
            if node is None or node_id in seen or node.get("mode") == MUTED:
                return None
            seen.add(node_id)
            sockets = [s for s in node.get("inputs") or [] if s.get("link") is not None]
            if node.get("type") == "Reroute":
                if not sockets:
                    return None
                link_id = sockets[0]["link"]
                continue
            if node.get("mode") == BYPASSED:
                outputs = node.get("outputs") or []
                out_type = outputs[slot].get("type", "*") if 0 <= slot < len(outputs) else "*"
                all_sockets = node.get("inputs") or []
                preferred = [all_sockets[slot]] if 0 <= slot < len(all_sockets) else []
                match = next((s for s in preferred + all_sockets
                              if s.get("link") is not None and _types_match(s.get("type", "*"), out_type)), None)
                if match is None:
                    return None
                link_id = match["link"]
                continue
            if node.get("type") in VIRTUAL_TYPES and node.get("type") not in node_classes:
                return None
            return node_id, slot

    specs, api = _Specs(node_classes), {}
    for node in ui.get("nodes", []):
        node_id, class_type, mode = node["id"], node.get("type"), node.get("mode", 0)
        if mode in (MUTED, BYPASSED) or (class_type in VIRTUAL_TYPES and class_type not in node_classes):
            continue
        if class_type not in node_classes:
            raise WorkflowError(_unknown("node type", node_id, class_type, node_classes))
        spec, _ = specs[class_type]
        inputs = {}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):  # some node packs save widgets by name
            inputs.update({name: values[name] for name, inp in spec.items() if inp.has_slot and name in values})
        else:
            i = 0
            for inp in spec.values():
                if inp.has_slot and i < len(values):
                    inputs[inp.name] = values[i]
                    i += 1 + inp.control
        for socket in node.get("inputs") or []:
            if socket.get("link") is not None:
                name = (socket.get("widget") or {}).get("name", socket["name"])
                linked = source(socket["link"], f"node {node_id} ({class_type}) input '{name}'")
                if linked is not None:
                    inputs[name] = [str(linked[0]), linked[1]]
        api[str(node_id)] = {"class_type": class_type, "inputs": inputs,
                             "_meta": {"title": node.get("title") or class_type}}
    return api


def api_to_ui(api: dict, node_classes: dict[str, type]) -> dict:
    """Build a tidy editor (UI) workflow from an API workflow.

    Nodes are laid out left to right by topological depth, titles come from `_meta`, and seeds get the
    control value "fixed". `ui_to_api(api_to_ui(x))` gives back `x` (ignoring `_meta`) when node ids are
    numeric (others are renumbered 1, 2, ...) and every widget input has a value, as in ComfyUI exports;
    an absent widget value is filled with its default.
    """
    _check_api_shape(api)
    for node_id, node in api.items():
        if _node_class(node_classes, node.get("class_type")) is None:
            raise WorkflowError(_unknown("class_type", node_id, node.get("class_type"), node_classes))
    numeric = all(str(node_id).isdigit() for node_id in api)
    number = {node_id: int(node_id) if numeric else i for i, node_id in enumerate(api, 1)}
    order = _toposort(api, list(api))
    depth = {}
    for node_id in order:
        depth[node_id] = 1 + max((depth[src] for _, src, _ in _links(api[node_id])), default=-1)

    specs, ui_nodes, column_y = _Specs(node_classes), {}, {}
    for position, node_id in enumerate(order):
        node, class_type = api[node_id], api[node_id]["class_type"]
        cls, (spec, _) = node_classes[class_type], specs[class_type]
        given = node.get("inputs") or {}
        unexpected = [name for name in given if name not in spec]
        if unexpected:
            raise WorkflowError(f"node {node_id} ({class_type}) input '{unexpected[0]}': unexpected input - "
                                f"remove it (valid inputs: {', '.join(spec) or 'none'})")
        sockets, values = [], []
        for inp in spec.values():
            value = given.get(inp.name, inp.default)
            if inp.has_slot:
                values.append(inp.default if _is_link(value) else value)
                if inp.control:
                    values.append("fixed")
            if not inp.has_slot or _is_link(value):
                socket = {"name": inp.name, "type": _type_name(inp.type), "link": None}
                if inp.has_slot:
                    socket["widget"] = {"name": inp.name}
                sockets.append(socket)
        return_types = tuple(getattr(cls, "RETURN_TYPES", ()))
        names = tuple(getattr(cls, "RETURN_NAMES", None) or ()) or tuple(map(_type_name, return_types))
        outputs = [{"name": names[i], "type": _type_name(t), "links": [], "slot_index": i}
                   for i, t in enumerate(return_types)]
        multiline = any(inp.opts.get("multiline") for inp in spec.values() if inp.has_slot)
        height = 30 + 22 * max(len(sockets), len(outputs), 1) + 26 * len(values) + 80 * multiline
        column = depth[node_id]
        y = column_y.get(column, 50)
        column_y[column] = y + height + 40
        ui_nodes[node_id] = {
            "id": number[node_id], "type": class_type, "pos": [50 + 400 * column, y],
            "size": [400 if multiline else 320, height], "flags": {}, "order": position, "mode": 0,
            "inputs": sockets, "outputs": outputs, "properties": {"Node name for S&R": class_type},
            "widgets_values": values}
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_nodes[node_id]["title"] = title

    links = []
    for node_id in order:
        for slot, socket in enumerate(ui_nodes[node_id]["inputs"]):
            value = (api[node_id].get("inputs") or {}).get(socket["name"])
            if not _is_link(value):
                continue
            src, index = str(value[0]), value[1]
            outputs = ui_nodes[src]["outputs"]
            if not 0 <= index < len(outputs):
                raise WorkflowError(f"node {node_id} ({api[node_id]['class_type']}) input '{socket['name']}': "
                                    f"links to output {index} of {_label(api, src)}, which has {len(outputs)} "
                                    "output(s) - link an existing output")
            link_id = len(links) + 1
            links.append([link_id, number[src], index, number[node_id], slot, outputs[index]["type"]])
            socket["link"] = link_id
            outputs[index]["links"].append(link_id)

    return {"last_node_id": max(number.values()), "last_link_id": len(links),
            "nodes": [ui_nodes[node_id] for node_id in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def load_workflow(source: "str | os.PathLike | dict", node_classes: dict[str, type]) -> dict:
    """Read a workflow from a JSON file path or a dict, in either format, and return it in API format.

    A `{"prompt": {...}}` wrapper (as POSTed to /prompt) is unwrapped. A dict is not modified.
    """
    where = "the workflow"
    if isinstance(source, (str, os.PathLike)):
        where = f"workflow file '{os.fspath(source)}'"
        try:
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise WorkflowError(f"cannot read {where}: {e.strerror or e} - check the path") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise WorkflowError(f"{where} is not valid JSON ({e}) - save or export it again from ComfyUI") from e
        except RecursionError:
            raise WorkflowError(f"{where} is nested too deeply to be a ComfyUI workflow") from None
    else:
        data = source
    _check_nesting(data, where)
    if is_ui_format(data):
        return ui_to_api(data, node_classes)
    if not _is_api_format(data) and isinstance(data, dict) and _is_api_format(data.get("prompt")):
        data = data["prompt"]
    if not _is_api_format(data):
        raise WorkflowError(f"{where} is neither an API-format workflow ({{id: {{'class_type', 'inputs'}}}}) nor "
                            "an editor workflow (with a 'nodes' list) - save it from ComfyUI with 'Save' or "
                            "'Export (API)'")
    return copy.deepcopy(data)


# ---------------------------------------------------------------------------------------------------
# validation and execution


def _check_link(api: dict, node_classes: dict, value: list, inp: _Input) -> str | None:
    src, index = str(value[0]), value[1]
    node = api.get(src)
    if not isinstance(node, dict):
        return f"links to node {src}, which does not exist - link it to an existing node's output"
    cls = _node_class(node_classes, node.get("class_type"))
    if cls is None:
        return None  # reported at the source node
    return_types = tuple(getattr(cls, "RETURN_TYPES", ()))
    if not 0 <= index < len(return_types):
        return (f"links to output {index} of {_label(api, src)}, which has {len(return_types)} output(s) - "
                f"use an output index from 0 to {len(return_types) - 1}" if return_types else
                f"links to {_label(api, src)}, which has no outputs - link another node")
    if not _types_match(return_types[index], inp.type):
        return (f"links to output {index} of {_label(api, src)} of type {_type_name(return_types[index])}, but "
                f"the input takes {_type_name(inp.type)} - link an output of type {_type_name(inp.type)}")
    return None


def _non_finite(value: Any, inp: _Input) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and _type_name(inp.type) in ("INT", "FLOAT") and not math.isfinite(value):
        return f"{value!r} is not a finite number - set a number{_range_text(inp)}"
    return None


def _check_widget(value: Any, inp: _Input) -> str | None:
    choices = inp.choices
    if choices is not None:
        if value in choices:
            return None
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        shown = ", ".join(map(repr, choices[:10])) + (", ..." if len(choices) > 10 else "")
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{value!r} is not one of the choices [{shown}]{hint} - pick one of them"
    kind = _type_name(inp.type)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    non_finite = _non_finite(value, inp)
    if non_finite:
        return non_finite
    ok = {"INT": number and isinstance(value, int), "FLOAT": number, "STRING": isinstance(value, str),
          "BOOLEAN": isinstance(value, bool)}.get(kind, True)
    if not ok:
        wanted = {"INT": "an integer", "FLOAT": "a number", "STRING": "a string", "BOOLEAN": "true or false"}[kind]
        return f"expects {wanted} ({kind}), got {type(value).__name__} {value!r} - set {wanted}"
    low, high = inp.opts.get("min"), inp.opts.get("max")
    if number and ((low is not None and value < low) or (high is not None and value > high)):
        return f"value {value} is outside [{low}, {high}] - set a value within that range"
    return None


def _range_text(inp: _Input) -> str:
    low, high = inp.opts.get("min"), inp.opts.get("max")
    return f" within [{low}, {high}]" if low is not None and high is not None else ""


def _custom_check(cls: type, given: dict) -> str | None:
    """The node's own VALIDATE_INPUTS, called as ComfyUI calls it before running anything: with the inputs its
    signature names (all of them for **kwargs), linked ones as None. Its refusal, or None."""
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    if validate is None:
        return None
    parameters = inspect.signature(validate).parameters
    everything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments = {name: None if _is_link(value) else value for name, value in given.items()
                 if everything or name in parameters}
    try:
        verdict = validate(**arguments)
    except Exception as error:  # a node's check that crashes is a refusal, reported like one
        return f"{type(error).__name__}: {error}"
    if verdict is True:
        return None
    return verdict if isinstance(verdict, str) else f"its inputs were refused (VALIDATE_INPUTS returned {verdict!r})"


def _problems(api: dict, node_classes: dict, specs: _Specs) -> list[str]:
    problems, has_output = [], False
    for node_id, node in api.items():
        if "class_type" not in node:
            problems.append(f"node {node_id}: no 'class_type' - give it one, or remove the node")
            continue
        class_type, given = node["class_type"], node.get("inputs", {})
        if not isinstance(class_type, str):
            problems.append(f"node {node_id}: 'class_type' is {str(class_type)[:60]}, not a node type name - "
                            "give the name of a node, e.g. LongVideoSampler")
            continue
        cls = node_classes.get(class_type)
        if cls is None:
            problems.append(_unknown("class_type", node_id, class_type, node_classes))
            continue
        has_output |= bool(getattr(cls, "OUTPUT_NODE", False))
        if not isinstance(given, dict):
            problems.append(f"node {node_id} ({class_type}): 'inputs' must be a dict of input name to value or link")
            continue
        spec, _ = specs[class_type]
        where = f"node {node_id} ({class_type}) input"
        before = len(problems)
        custom = _custom_validation(cls)
        for inp in spec.values():
            if inp.required and inp.name not in given:
                fix = "set a value" if inp.is_widget else f"link an output of type {_type_name(inp.type)}"
                problems.append(f"{where} '{inp.name}': missing required input - {fix}")
        for name, value in given.items():
            inp = spec.get(name)
            if inp is None:
                problem = f"unexpected input - remove it (valid inputs: {', '.join(spec) or 'none'})"
            elif _is_link(value):
                problem = _check_link(api, node_classes, value, inp)
            elif not inp.is_widget:
                problem = (f"takes a link to an output of type {_type_name(inp.type)}, got the value {value!r} - "
                           "link it as [source_node_id, output_index]")
            elif name in custom:
                # As ComfyUI: VALIDATE_INPUTS replaces the built-in checks of the inputs it takes; NaN is refused all the same.
                problem = _non_finite(value, inp)
            else:
                problem = _check_widget(value, inp)
            if problem:
                problems.append(f"{where} '{name}': {problem}")
        if len(problems) == before:
            refusal = _custom_check(cls, given)
            if refusal:
                problems.append(f"node {node_id} ({class_type}): {refusal}")
    if not has_output:
        examples = [name for name, cls in node_classes.items() if getattr(cls, "OUTPUT_NODE", False)][:5]
        problems.append("the workflow has no output node (OUTPUT_NODE = True), so nothing would run - add one"
                        + (f", e.g. {', '.join(examples)}" if examples else ""))
    return problems


def _problems_error(problems: list[str]) -> WorkflowError:
    if len(problems) == 1:
        return WorkflowError(f"the workflow has 1 problem: {problems[0]}", problems)
    return WorkflowError(f"the workflow has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems), problems)


def _custom_validation(cls: type) -> set[str]:
    """The inputs a node's VALIDATE_INPUTS takes (ComfyUI then skips its own checks of them)."""
    function = getattr(cls, "VALIDATE_INPUTS", None)
    return set(inspect.signature(function).parameters) - {"cls", "self"} if function is not None else set()


def validate_workflow(api: dict, node_classes: dict[str, type]) -> None:
    """Check an API workflow against the node classes; raise one WorkflowError listing every problem.

    Checked: unknown class_type, missing required and unexpected inputs, links to missing nodes or
    outputs, link type mismatches ("*" matches anything), widget values of the wrong kind, out of
    [min, max] or not among a combo's choices, and the presence of an output node.
    """
    _check_api_shape(api)
    problems = _problems(api, node_classes, _Specs(node_classes))
    if problems:
        raise _problems_error(problems)


def _toposort(api: dict, roots: list[str]) -> list[str]:
    """The roots and every node they depend on, each after its sources; a cycle raises WorkflowError. A depth-first
    walk with its own stack (no recursion), so a chain of any length works."""
    order, state = [], {}
    for root in roots:
        if state.get(root) == "done":
            continue
        state[root] = "visiting"
        stack = [(root, _links(api[root]))]
        while stack:
            node_id, sources = stack[-1]
            for name, src, _ in sources:
                if src not in api:
                    raise WorkflowError(f"{_label(api, node_id)} input '{name}': links to node {src}, which does not "
                                        "exist - link it to an existing node's output")
                if state.get(src) == "done":
                    continue
                if state.get(src) == "visiting":
                    path = [n for n, _ in stack]
                    cycle = path[path.index(src):] + [src]
                    raise WorkflowError("the workflow has a cycle: " + " -> ".join(_label(api, n) for n in cycle)
                                        + " - remove one of these links")
                state[src] = "visiting"
                stack.append((src, _links(api[src])))
                break
            else:
                stack.pop()
                state[node_id] = "done"
                order.append(node_id)
    return order


def execution_order(api: dict, node_classes: dict[str, type]) -> list[str]:
    """Node ids in the order they run: the output nodes (OUTPUT_NODE True) and the nodes they depend on,
    each after its sources. Nodes feeding no output node are left out; a cycle raises WorkflowError."""
    _check_api_shape(api)
    outputs = []
    for node_id, node in api.items():
        cls = _node_class(node_classes, node.get("class_type"))
        if cls is None:
            raise WorkflowError(_unknown("class_type", node_id, node.get("class_type"), node_classes))
        if getattr(cls, "OUTPUT_NODE", False):
            outputs.append(node_id)
    if not outputs:
        raise WorkflowError("the workflow has no output node (OUTPUT_NODE = True), so nothing would run - add one")
    return _toposort(api, outputs)


def run_workflow(api: dict, node_classes: dict[str, type], *,
                 on_node_start: Callable[[str, str], None] | None = None,
                 on_node_done: Callable[[str, str, tuple], None] | None = None) -> dict[str, dict]:
    """Validate and execute an API workflow; return {node_id: ui} for the nodes that returned a "ui".

    Hidden inputs are filled (UNIQUE_ID: the node id, PROMPT: the workflow, others: None); optional
    inputs absent from the workflow are not passed. `on_node_start(node_id, class_type)` and
    `on_node_done(node_id, class_type, outputs)` are called around each node. A node's exception is
    re-raised unchanged, with a note naming the node. Outputs are released once no later node needs them.
    """
    _check_api_shape(api)
    specs = _Specs(node_classes)
    problems = _problems(api, node_classes, specs)
    if problems:
        raise _problems_error(problems)
    order = execution_order(api, node_classes)
    pending = Counter(src for node_id in order for _, src, _ in _links(api[node_id]))
    results, ui = {}, {}
    for node_id in order:
        node, class_type = api[node_id], api[node_id]["class_type"]
        cls, (_, hidden) = node_classes[class_type], specs[class_type]
        kwargs = {name: results[str(value[0])][value[1]] if _is_link(value) else value
                  for name, value in node.get("inputs", {}).items()}
        kwargs.update({name: {"UNIQUE_ID": node_id, "PROMPT": api}.get(kind) for name, kind in hidden.items()})
        if on_node_start:
            on_node_start(node_id, class_type)
        try:
            returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        except Exception as e:
            e.add_note(f"raised by node {node_id} ({class_type}) of the workflow")
            raise
        node_ui, outputs = (returned.get("ui"), returned.get("result") or ()) if isinstance(returned, dict) \
            else (None, () if returned is None else returned)
        return_types = tuple(getattr(cls, "RETURN_TYPES", ()))
        if not isinstance(outputs, (tuple, list)) or (len(outputs) != len(return_types) and (
                outputs or not getattr(cls, "OUTPUT_NODE", False))):
            raise WorkflowError(f"node {node_id} ({class_type}) returned {type(outputs).__name__} {outputs!r:.80} "
                                f"but declares RETURN_TYPES {return_types} - its {cls.FUNCTION}() must return a "
                                "tuple with one value per output (or a dict with 'ui' and 'result')")
        results[node_id] = tuple(outputs)
        if node_ui is not None:
            ui[node_id] = node_ui
        if on_node_done:
            on_node_done(node_id, class_type, results[node_id])
        for _, src, _ in _links(node):
            pending[src] -= 1
            if pending[src] == 0:
                results.pop(src, None)  # free large intermediates (latents, frames) early
    return ui
