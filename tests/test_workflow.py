import copy
import json

import pytest

from longvideo.utils import workflow
from longvideo.utils.workflow import WorkflowError

CALLS = []  # (class name, kwargs) of every node run
OPS = ["add", "mul"]  # combo choices, read when INPUT_TYPES() is called
INPUT_TYPES_CALLS = []


class Number:
    RETURN_TYPES = ("INT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})}}

    def make(self, value):
        CALLS.append(("Number", {"value": value}))
        return (value,)


class Seed:
    RETURN_TYPES = ("INT", "STRING")
    RETURN_NAMES = ("seed", "label")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**32}),
                             "label": ("STRING", {"default": "s", "multiline": True})}}

    def make(self, seed, label):
        CALLS.append(("Seed", {"seed": seed, "label": label}))
        return (seed, label)


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 0, "min": -10, "max": 10})},
                "optional": {"c": ("INT", {"forceInput": True})}}

    def add(self, **kwargs):
        CALLS.append(("Add", kwargs))
        return (kwargs["a"] + kwargs["b"] + kwargs.get("c", 0),)


class Op:
    RETURN_TYPES = ("INT",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        INPUT_TYPES_CALLS.append("Op")
        return {"required": {"x": ("INT", {"forceInput": True}), "op": (list(OPS),),
                             "k": ("INT", {"default": 2, "min": 0, "max": 9, "control_after_generate": True}),
                             "flag": ("BOOLEAN", {"default": False}), "gain": ("FLOAT", {"default": 1.0, "max": 4.0})}}

    def apply(self, x, op, k, flag, gain):
        CALLS.append(("Op", {"x": x, "op": op}))
        return (x + k if op == "add" else x * k,)


class Latent:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return ("latent",)


class Any_:
    RETURN_TYPES = ("*",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"anything": ("*",)}}

    def make(self, anything):
        return (anything,)


class Boom:
    RETURN_TYPES = ("INT",)
    FUNCTION = "explode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def explode(self):
        raise RuntimeError("boom")


class Collect:
    RETURN_TYPES = ()
    FUNCTION = "collect"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def collect(self, values, unique_id, prompt, extra_pnginfo):
        CALLS.append(("Collect", {"values": values, "unique_id": unique_id, "prompt": prompt,
                                  "extra_pnginfo": extra_pnginfo}))
        return {"ui": {"values": [values]}}


NODES = {c.__name__.rstrip("_"): c for c in (Number, Seed, Add, Op, Latent, Any_, Boom, Collect)}


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    INPUT_TYPES_CALLS.clear()


def graph():
    """(3 + 4) then * 2 -> Collect; node 8 feeds nothing and must not run. Listed out of order on purpose."""
    return {
        "9": {"class_type": "Collect", "inputs": {"values": ["6", 0]}, "_meta": {"title": "Result"}},
        "6": {"class_type": "Op", "inputs": {"x": ["5", 0], "op": "mul", "k": 2, "flag": True, "gain": 0.5}},
        "5": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": 4}},
        "3": {"class_type": "Number", "inputs": {"value": 3}},
        "8": {"class_type": "Boom", "inputs": {}},
    }


def errors(api):
    with pytest.raises(WorkflowError) as info:
        workflow.validate_workflow(api, NODES)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------
# execution


def test_runs_in_topological_order_and_returns_ui():
    started, done = [], []
    ui = workflow.run_workflow(graph(), NODES, on_node_start=lambda i, c: started.append((i, c)),
                               on_node_done=lambda i, c, out: done.append((i, out)))
    assert ui == {"9": {"values": [14]}}
    assert started == [("3", "Number"), ("5", "Add"), ("6", "Op"), ("9", "Collect")]
    assert done[:3] == [("3", (3,)), ("5", (7,)), ("6", (14,))]
    assert workflow.execution_order(graph(), NODES) == ["3", "5", "6", "9"]


def test_nodes_feeding_no_output_are_not_run():
    workflow.run_workflow(graph(), NODES)  # node 8 (Boom) would raise
    assert "8" not in workflow.execution_order(graph(), NODES)


def test_hidden_inputs_are_filled_and_absent_optional_inputs_not_passed():
    api = graph()
    workflow.run_workflow(api, NODES)
    add = next(kwargs for name, kwargs in CALLS if name == "Add")
    assert add == {"a": 3, "b": 4}  # optional "c" absent
    collect = next(kwargs for name, kwargs in CALLS if name == "Collect")
    assert collect["unique_id"] == "9" and collect["prompt"] is api and collect["extra_pnginfo"] is None


def test_optional_link_is_passed():
    api = graph()
    api["5"]["inputs"]["c"] = ["3", 0]
    assert workflow.run_workflow(api, NODES) == {"9": {"values": [20]}}


def test_node_exception_keeps_its_type_and_gets_a_note():
    api = graph()
    api["9"]["inputs"]["values"] = ["8", 0]
    with pytest.raises(RuntimeError, match="boom") as info:
        workflow.run_workflow(api, NODES)
    assert any("node 8 (Boom)" in note for note in info.value.__notes__)


def test_cycle_is_detected():
    api = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
           "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
           "3": {"class_type": "Collect", "inputs": {"values": ["2", 0]}}}
    with pytest.raises(WorkflowError, match="cycle") as info:
        workflow.execution_order(api, NODES)
    assert "node 1 (Add)" in str(info.value) and "node 2 (Add)" in str(info.value)
    with pytest.raises(WorkflowError, match="cycle"):
        workflow.run_workflow(api, NODES)


def test_star_type_matches_anything():
    api = graph()
    api["7"] = {"class_type": "Any", "inputs": {"anything": ["6", 0]}}
    api["9"]["inputs"]["values"] = ["7", 0]
    assert workflow.run_workflow(api, NODES) == {"9": {"values": [14]}}


# ---------------------------------------------------------------------------------------------------
# validation


def _set(node_id, name, value):
    def change(api):
        api[node_id]["inputs"][name] = value
    return change


def _drop(node_id, name):
    return lambda api: api[node_id]["inputs"].pop(name)


@pytest.mark.parametrize("change, node_id, name, words", [
    (lambda api: api["3"].update(class_type="Nmber"), "3", "Nmber", "unknown class_type"),
    (_drop("5", "b"), "5", "'b'", "missing required input"),
    (_drop("5", "a"), "5", "'a'", "missing required input"),
    (_set("5", "d", 1), "5", "'d'", "unexpected input"),
    (_set("5", "a", ["42", 0]), "5", "'a'", "does not exist"),
    (_set("5", "a", ["3", 1]), "5", "'a'", "has 1 output"),
    (_set("5", "a", ["8", 0]), "5", "'a'", None),  # Boom is fine as a source: no problem
    (lambda api: api.update({"7": {"class_type": "Latent", "inputs": {}}}) or _set("5", "a", ["7", 0])(api),
     "5", "'a'", "type LATENT"),
    (_set("3", "value", 101), "3", "'value'", "outside [0, 100]"),
    (_set("3", "value", -1), "3", "'value'", "outside [0, 100]"),
    (_set("3", "value", "3"), "3", "'value'", "expects an integer"),
    (_set("3", "value", 2.5), "3", "'value'", "expects an integer"),
    (_set("6", "flag", 1), "6", "'flag'", "true or false"),
    (_set("6", "gain", "x"), "6", "'gain'", "expects a number"),
    (_set("6", "gain", 4.5), "6", "'gain'", "outside [None, 4.0]"),
    (_set("6", "op", "mull"), "6", "'op'", "did you mean 'mul'"),
    (_set("5", "a", 3), "5", "'a'", None),  # a forceInput widget may take a literal value
])
def test_validation_errors_name_node_and_input(change, node_id, name, words):
    api = graph()
    change(api)
    if words is None:
        workflow.validate_workflow(api, NODES)
        return
    message = errors(api)
    assert words in message and name in message and f"node {node_id} (" in message
    assert "1 problem" in message


def test_link_type_input_given_a_literal():
    api = graph()
    api["7"] = {"class_type": "Any", "inputs": {"anything": 5}}
    assert "node 7 (Any) input 'anything'" in errors(api)


def test_no_output_node():
    api = graph()
    del api["9"]
    assert "no output node" in errors(api) and "Collect" in errors(api)


def test_problems_are_collected_into_one_error():
    api = graph()
    api["3"]["inputs"]["value"] = 500
    api["6"]["inputs"]["op"] = "div"
    del api["5"]["inputs"]["b"]
    with pytest.raises(WorkflowError) as info:
        workflow.validate_workflow(api, NODES)
    assert len(info.value.problems) == 3 and "3 problem(s)" in str(info.value)


def test_run_validates_first():
    api = graph()
    api["3"]["inputs"]["value"] = 500
    with pytest.raises(WorkflowError, match="node 3 \\(Number\\) input 'value'"):
        workflow.run_workflow(api, NODES)
    assert CALLS == []


def test_combo_choices_are_read_once_per_validation():
    api = graph()
    api["7"] = {"class_type": "Op", "inputs": {"x": ["3", 0], "op": "sub", "k": 1, "flag": False, "gain": 1.0}}
    assert "'sub' is not one of" in errors(api)
    assert INPUT_TYPES_CALLS == ["Op"]
    OPS.append("sub")  # computed at call time: now valid
    try:
        workflow.validate_workflow(api, NODES)
    finally:
        OPS.remove("sub")


# ---------------------------------------------------------------------------------------------------
# formats


def ui_workflow():
    """An editor workflow: seed with a "randomize" control value, a converted widget linked from a node,
    a muted node, a note, a reroute and a bypassed node."""
    def node(id, type, inputs=(), outputs=(), widgets=(), mode=0, **extra):
        return {"id": id, "type": type, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": 0, "mode": mode,
                "inputs": list(inputs), "outputs": list(outputs), "properties": {}, "widgets_values": list(widgets),
                **extra}

    def out(type, *links):
        return {"name": type, "type": type, "links": list(links), "slot_index": 0}

    return {
        "last_node_id": 20, "last_link_id": 6,
        "nodes": [
            node(1, "Seed", outputs=[out("INT", 1), {"name": "label", "type": "STRING", "links": []}],
                 widgets=[1234, "randomize", "hello"], title="My seed"),
            node(2, "Number", outputs=[out("INT", 2)], widgets=[7]),
            # Op: x linked through a reroute; k converted to a socket and linked from node 2; its value 5 still
            # sits in widgets_values, followed by the control value of k
            node(3, "Op", inputs=[{"name": "x", "type": "INT", "link": 3},
                                  {"name": "k", "type": "INT", "link": 2, "widget": {"name": "k"}}],
                 outputs=[out("INT", 4)], widgets=["add", 5, "increment", True, 2.0]),
            node(4, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[out("INT", 3)]),
            node(5, "Add", inputs=[{"name": "a", "type": "INT", "link": 4}], outputs=[out("INT", 5)],
                 widgets=[1], mode=4),  # bypassed: its input passes through
            node(6, "Collect", inputs=[{"name": "values", "type": "INT", "link": 5}]),
            node(7, "Boom", outputs=[out("INT")], mode=2),  # muted
            node(8, "Note", widgets=["a note"]),
        ],
        "links": [[1, 1, 0, 4, 0, "INT"], [2, 2, 0, 3, 1, "INT"], [3, 4, 0, 3, 0, "INT"],
                  [4, 3, 0, 5, 0, "INT"], [5, 5, 0, 6, 0, "INT"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def strip_meta(api):
    return {node_id: {k: v for k, v in node.items() if k != "_meta"} for node_id, node in api.items()}


def test_is_ui_format():
    assert workflow.is_ui_format(ui_workflow())
    assert not workflow.is_ui_format(graph())


def test_ui_to_api():
    api = workflow.ui_to_api(ui_workflow(), NODES)
    assert strip_meta(api) == {
        "1": {"class_type": "Seed", "inputs": {"seed": 1234, "label": "hello"}},
        "2": {"class_type": "Number", "inputs": {"value": 7}},
        "3": {"class_type": "Op", "inputs": {"op": "add", "k": ["2", 0], "flag": True, "gain": 2.0, "x": ["1", 0]}},
        "6": {"class_type": "Collect", "inputs": {"values": ["3", 0]}},
    }
    assert api["1"]["_meta"] == {"title": "My seed"} and api["2"]["_meta"] == {"title": "Number"}
    assert workflow.run_workflow(api, NODES) == {"6": {"values": [1234 + 7]}}


def test_ui_converted_widget_from_primitive_keeps_its_value():
    ui = ui_workflow()
    ui["nodes"][1]["type"] = "PrimitiveNode"  # node 2 becomes an editor-only primitive feeding k
    assert workflow.ui_to_api(ui, NODES)["3"]["inputs"]["k"] == 5


def test_ui_unknown_node_type():
    ui = ui_workflow()
    ui["nodes"][1]["type"] = "Mystery"
    with pytest.raises(WorkflowError, match="node 2 \\(Mystery\\)"):
        workflow.ui_to_api(ui, NODES)


def test_round_trip_api_to_ui_to_api():
    api = graph()
    api["1"] = {"class_type": "Seed", "inputs": {"seed": 99, "label": "x"}, "_meta": {"title": "Seed it"}}
    api["5"]["inputs"]["c"] = ["1", 0]
    api["6"]["inputs"]["k"] = ["1", 0]  # a widget fed by a link
    ui = workflow.api_to_ui(api, NODES)
    json.dumps(ui)  # serialisable
    assert workflow.is_ui_format(ui)
    assert strip_meta(workflow.ui_to_api(ui, NODES)) == strip_meta(api)

    nodes = {n["id"]: n for n in ui["nodes"]}
    assert nodes[1]["widgets_values"] == [99, "fixed", "x"] and nodes[1]["title"] == "Seed it"
    assert nodes[9]["title"] == "Result"
    assert nodes[6]["widgets_values"] == ["mul", 2, "fixed", True, 0.5]  # k's slot keeps a value, then control
    k = next(socket for socket in nodes[6]["inputs"] if socket["name"] == "k")
    assert k["widget"] == {"name": "k"} and ui["links"][k["link"] - 1][1:3] == [1, 0]  # converted widget socket
    x = {node_id: n["pos"][0] for node_id, n in nodes.items()}
    assert x[3] == x[1] == x[8] < x[5] < x[6] < x[9]  # columns by topological depth
    assert nodes[1]["outputs"][0]["name"] == "seed" and len(nodes[1]["outputs"][0]["links"]) == 2
    assert ui["last_node_id"] == 9 and ui["last_link_id"] == len(ui["links"]) == 5
    for link_id, src, slot, dst, dst_slot, type_ in ui["links"]:
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id and link_id in nodes[src]["outputs"][slot]["links"]


def test_api_to_ui_renumbers_non_numeric_ids():
    api = {"num": {"class_type": "Number", "inputs": {"value": 2}},
           "out": {"class_type": "Collect", "inputs": {"values": ["num", 0]}}}
    back = workflow.ui_to_api(workflow.api_to_ui(api, NODES), NODES)
    assert strip_meta(back) == {"1": {"class_type": "Number", "inputs": {"value": 2}},
                                "2": {"class_type": "Collect", "inputs": {"values": ["1", 0]}}}


def test_load_workflow(tmp_path):
    ui_file, api_file, bad = tmp_path / "ui.json", tmp_path / "api.json", tmp_path / "broken.json"
    ui_file.write_text(json.dumps(ui_workflow()))
    api_file.write_text(json.dumps({"prompt": graph()}))
    bad.write_text("{not json")
    expected = strip_meta(workflow.ui_to_api(ui_workflow(), NODES))
    assert strip_meta(workflow.load_workflow(str(ui_file), NODES)) == expected
    assert workflow.load_workflow(api_file, NODES) == graph()
    original = graph()
    loaded = workflow.load_workflow(original, NODES)
    assert loaded == original and loaded is not original
    with pytest.raises(WorkflowError, match="broken.json"):
        workflow.load_workflow(str(bad), NODES)
    with pytest.raises(WorkflowError, match="missing.json"):
        workflow.load_workflow(str(tmp_path / "missing.json"), NODES)
    with pytest.raises(WorkflowError, match="neither"):
        workflow.load_workflow({"foo": 1}, NODES)


def test_graph_fixture_is_not_modified_by_run():
    api = graph()
    before = copy.deepcopy(api)
    workflow.run_workflow(api, NODES)
    assert api == before


# ---------------------------------------------------------------------------------------------------
# hostile files and values (issue: nothing lost under concurrency, signals and bad values)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_inputs_refuse_nan_and_infinity(value):
    api = graph()
    api["6"]["inputs"]["gain"] = value
    with pytest.raises(WorkflowError, match=r"node 6 \(Op\) input 'gain': .* not a finite number") as info:
        workflow.run_workflow(api, NODES)
    assert len(info.value.problems) == 1 and "\n" not in str(info.value)
    assert CALLS == []


def test_nan_in_a_json_file_is_refused(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(graph()).replace('"gain": 0.5', '"gain": NaN'))
    with pytest.raises(WorkflowError, match="'gain': nan is not a finite number"):
        workflow.validate_workflow(workflow.load_workflow(str(path), NODES), NODES)


def chain(length: int) -> dict:
    """Number -> Add -> Add -> ... -> Collect, `length` Add nodes each adding 1, listed from the output back."""
    api = {"out": {"class_type": "Collect", "inputs": {"values": [str(length), 0]}}}
    for i in range(length, 0, -1):
        api[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    api["0"] = {"class_type": "Number", "inputs": {"value": 7}}
    return api


@pytest.mark.parametrize("length", [1000, 20000])
def test_long_chains_run_without_recursion(length):
    ui = workflow.run_workflow(chain(length), NODES)
    assert ui == {"out": {"values": [7 + length]}}
    assert len(workflow.api_to_ui(chain(length), NODES)["nodes"]) == length + 2


def test_long_cycle_is_reported_without_recursion():
    api = chain(5000)
    api["1"]["inputs"]["a"] = ["5000", 0]
    with pytest.raises(WorkflowError, match="cycle"):
        workflow.run_workflow(api, NODES)


def test_long_reroute_chain_in_the_editor_format():
    ui = {"nodes": [{"id": 1, "type": "Number", "widgets_values": [5], "outputs": [{"name": "INT", "type": "INT", "links": [1]}]},
                    {"id": 2, "type": "Collect", "inputs": [{"name": "values", "type": "INT", "link": 3001}]}],
          "links": [[1, 1, 0, 100, 0, "INT"]]}
    for i in range(3000):  # reroute 100 + i takes link i + 1 and gives link i + 2
        ui["nodes"].append({"id": 100 + i, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": i + 1}],
                            "outputs": [{"name": "", "type": "*", "links": [i + 2]}]})
        ui["links"].append([i + 2, 100 + i, 0, 101 + i if i < 2999 else 2, 0, "*"])
    api = workflow.ui_to_api(ui, NODES)
    assert api["2"]["inputs"] == {"values": ["1", 0]}


MALFORMED = {
    "class_type is a list": ({"1": {"class_type": ["Number"], "inputs": {}}, "2": {"class_type": "Collect", "inputs": {"values": ["1", 0]}}},
                             r"node 1: 'class_type' is \['Number'\], not a node type name"),
    "link to a node whose class_type is a list": ({"1": {"class_type": {"x": 1}, "inputs": {}}, "2": {"class_type": "Collect", "inputs": {"values": ["1", 0]}}},
                                                  "node 1: 'class_type' is {'x': 1}"),
    "UI node without id": ({"nodes": [{"type": "Number", "widgets_values": [1]}], "links": []},
                           r"nodes\[0\] \(Number\) has no valid 'id'"),
    "UI node type is a number": ({"nodes": [{"id": 1, "type": 5}], "links": []}, "node 1 has 'type' 5"),
    "short link entry": ({"nodes": [{"id": 1, "type": "Number", "widgets_values": [1]}], "links": [[1, 1]]},
                         r"links\[0\] is \[1, 1\] - each link needs"),
    "link entry not a list": ({"nodes": [{"id": 1, "type": "Number"}], "links": ["x"]}, r"links\[0\] is x"),
    "socket not an object": ({"nodes": [{"id": 1, "type": "Collect", "inputs": ["values"]}], "links": []},
                             "'inputs' must be a list of socket objects"),
    "widgets_values a string": ({"nodes": [{"id": 1, "type": "Number", "widgets_values": "5"}], "links": []},
                                "'widgets_values' must be a list"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_workflows_give_one_clear_error(case, tmp_path):
    data, message = MALFORMED[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WorkflowError, match=message) as info:
        workflow.run_workflow(workflow.load_workflow(str(path), NODES), NODES)
    assert "\n" not in str(info.value)


def test_deeply_nested_json_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(WorkflowError, match="nested too deeply"):
        workflow.load_workflow(str(path), NODES)
    nested = graph()
    value = []
    for _ in range(workflow.MAX_NESTING):
        value = [value]
    nested["3"]["inputs"]["value"] = value
    with pytest.raises(WorkflowError, match="nested more than 100 levels"):
        workflow.load_workflow(nested, NODES)


class Checked:
    """A node with ComfyUI's VALIDATE_INPUTS: run before anything else runs."""
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True}), "name": ("STRING", {"default": "ok"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, values=None):
        CALLS.append(("VALIDATE_INPUTS", {"name": name, "values": values}))
        return True if name != "bad" else "name 'bad' is refused"

    def run(self, values, name):
        CALLS.append(("Checked", {"values": values}))
        return {}


def test_validate_inputs_runs_before_any_node():
    nodes = {**NODES, "Checked": Checked}
    api = {"1": {"class_type": "Number", "inputs": {"value": 3}},
           "2": {"class_type": "Checked", "inputs": {"values": ["1", 0], "name": "bad"}}}
    with pytest.raises(WorkflowError, match=r"node 2 \(Checked\): name 'bad' is refused"):
        workflow.run_workflow(api, nodes)
    assert CALLS == [("VALIDATE_INPUTS", {"name": "bad", "values": None})]  # links arrive as None; nothing ran
    CALLS.clear()
    api["2"]["inputs"]["name"] = "fine"
    workflow.run_workflow(api, nodes)
    assert [name for name, _ in CALLS] == ["VALIDATE_INPUTS", "Number", "Checked"]
