"""docs/result.schema.json and docs/mqtt.md cannot drift from the payload dataclasses.

The schema is written by hand (it carries ranges and descriptions no type hint has), so this
test derives what it must say from `edge.result`'s type hints: the same fields at every level,
nothing required that the code lacks, compatible JSON types, and every leaf documented in the docs/mqtt.md
field table.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge import result as r

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "result.schema.json").read_text())
DOC = (ROOT / "docs" / "mqtt.md").read_text()


def _json_types(tp: Any) -> tuple[set[str], Any]:
    """(JSON type names, the dataclass or item type inside) for a payload type hint."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        names: set[str] = set()
        inner = None
        for arg in typing.get_args(tp):
            n, i = _json_types(arg)
            names |= n
            inner = inner or i
        return names, inner
    if tp is type(None):
        return {"null"}, None
    if origin is typing.Literal:
        return {"string"}, None
    if origin is tuple:
        return {"array"}, typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp):
        return {"object"}, tp
    return {
        bool: {"boolean"},
        int: {"integer"},
        float: {"number"},
        str: {"string"},
        datetime: {"string"},
    }[tp], None


def _walk(cls: Any, node: dict[str, Any], path: str) -> list[tuple[str, Any, dict[str, Any]]]:
    out = []
    hints = typing.get_type_hints(cls)
    props = node.get("properties", {})
    fields = [f.name for f in dataclasses.fields(cls)]
    assert set(props) == set(fields), f"{path or 'result'}: schema {sorted(props)} vs dataclass {sorted(fields)}"
    # Fields added in a later version may be optional (older outboxes lack them), never unknown.
    assert set(node.get("required", [])) <= set(fields), f"{path or 'result'}: schema requires a field the code lacks"
    assert node.get("additionalProperties") is False, f"{path or 'result'}: unknown fields must be refused"
    for name in fields:
        out.append((f"{path}{name}", hints[name], props[name]))
    return out


def _schema_types(node: dict[str, Any]) -> set[str]:
    if "anyOf" in node or "oneOf" in node:
        return set().union(*(_schema_types(n) for n in node.get("anyOf", node.get("oneOf", []))))
    if "const" in node or "enum" in node:
        return {"string"} if all(isinstance(v, str) for v in node.get("enum", [node.get("const")])) else {"?"}
    t = node.get("type")
    if t is None and "$ref" in node:
        return _schema_types(_resolve(node["$ref"]))
    if isinstance(t, list):
        return set(t)
    return {t} if t else set()


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = SCHEMA
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _node_of(node: dict[str, Any], kind: str) -> dict[str, Any]:
    """The alternative of a (possibly nullable) schema node that has JSON type `kind`."""
    if "$ref" in node:
        return _node_of(_resolve(node["$ref"]), kind)
    for key in ("anyOf", "oneOf"):
        for alt in node.get(key, []):
            alt = _node_of(alt, kind)
            if alt.get("type") == kind or (isinstance(alt.get("type"), list) and kind in alt["type"]):
                return alt
    return node


def _all_leaves() -> list[tuple[str, Any, dict[str, Any]]]:
    todo = _walk(r.Result, SCHEMA, "")
    leaves = []
    while todo:
        path, tp, node = todo.pop(0)
        names, inner = _json_types(tp)
        got = _schema_types(node)
        assert names <= got or (names == {"integer"} and "number" in got) or got == {"?"}, (
            f"{path}: the dataclass sends {sorted(names)}, the schema allows {sorted(got)}"
        )
        if "null" not in names:
            assert "null" not in got, f"{path}: the schema allows null but the dataclass never sends it"
        if inner is not None and dataclasses.is_dataclass(inner):
            obj = (
                _node_of(_node_of(node, "array").get("items", {}), "object")
                if "array" in names
                else _node_of(node, "object")
            )
            todo.extend(_walk(inner, obj, f"{path}[]." if "array" in names else f"{path}."))
        else:
            leaves.append((path, tp, node))
    return leaves


def test_schema_matches_the_payload_dataclasses() -> None:
    leaves = _all_leaves()
    assert any(p == "quality.fluorescence_ratio" for p, _, _ in leaves)
    assert any(p == "quality.snr" for p, _, _ in leaves)


@pytest.mark.parametrize("path", [p for p, _, _ in _all_leaves()])
def test_every_field_is_documented_in_mqtt_md(path: str) -> None:
    # The table names objects' fields as `a.b`, list items as `top` / `peaks` with their keys.
    top = path.split("[]")[0].split(".")[0]
    plain = path.replace("[]", "")
    patterns = [re.escape(f"`{plain}`")]
    if "." in plain:  # or in their parent's row, e.g. | `top` | list of `{mineral, p}` |
        patterns.append(r"\| " + re.escape(f"`{top}`") + r" \|[^\n]*\b" + re.escape(plain.split(".")[-1]) + r"\b")
    if path.startswith("latency_ms."):
        patterns.append(re.escape("`latency_ms.*`"))
    if path.startswith(("model.",)):
        patterns.append(re.escape("`model.name`, `model.sha256`"))
    assert any(re.search(p, DOC) for p in patterns), f"{path} is not in the docs/mqtt.md field table"


def test_documented_quality_semantics_match_the_code() -> None:
    """The two quality numbers whose docs once disagreed with the code (issue 10, item 8)."""
    import numpy as np

    from edge.preprocess import PreprocessSpec, preprocess

    shift = np.linspace(100, 1500, 1400)
    band = 1000.0 * np.exp(-0.5 * ((shift - 1086) / 4) ** 2)
    background = 20000.0 * np.exp(-(((shift - 100) / 2000) ** 2))
    noise = np.random.default_rng(0).normal(0, 10.0, shift.size)
    prep = preprocess(shift, band + background + noise, PreprocessSpec(), corrected=False)
    # fluorescence_ratio: removed background height over the strongest band (~ptp(bg)/1000)
    expected = float(np.ptp(background)) / 1000.0
    assert prep.fluorescence_ratio == pytest.approx(expected, rel=0.25)
    # snr: strongest band over the pixel noise (sigma 10 -> ~100)
    assert 60 < prep.snr < 140
    assert "over the strongest band after removal" in DOC and "MAD of first differences" in DOC
