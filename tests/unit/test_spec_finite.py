"""Every float field of a spec refuses nan and inf, wherever it sits.

The effective spec spells out every field, so its float leaves are every float field a spec
has (the shipped toy spec's, with its policies, probes and MWRA table).
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from mrl_actors.errors import ConfigError
from mrl_actors.mwra import MwraConfig
from mrl_actors.spec import effective_toml, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def _float_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, float):
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _float_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _float_paths(v, (*path, i))]
    return []


def _set(tree: Any, path: tuple[Any, ...], value: float) -> Any:
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def test_every_float_field_refuses_nan_and_inf() -> None:
    spec, _ = load_spec(ROOT / "runtime" / "experiments" / "toy-pair.toml")
    tree = tomllib.loads(effective_toml(spec))
    paths = _float_paths(tree)
    assert any(p[:2] == ("mwra", "liveness_interval_s") for p in paths)
    assert len(paths) > 20
    for path in paths:
        for bad in (math.nan, math.inf, -math.inf):
            text = tomli_w.dumps(_set(tree, path, bad))
            with pytest.raises(ConfigError, match="finite"):
                parse_spec(text)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_mwra_config_built_in_code_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ConfigError):
        MwraConfig(liveness_interval_s=bad)
    with pytest.raises(ConfigError):
        MwraConfig(ratio={"a": bad})
