"""Every shipped spec parses; a malformed one names its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.spec import load_spec, parse_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "runtime" / "experiments").glob("*.toml"))

MINIMAL = """
[run]
name = "t"
[[policies]]
name = "a"
model = "m"
"""


def test_specs_are_shipped() -> None:
    assert {p.name for p in SPECS} >= {"toy-pair.toml", "math-pair.toml"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_parses(path: Path) -> None:
    spec, text = load_spec(path)
    assert spec.run.name and len(spec.policies) >= 2
    assert text.startswith("#")  # each spec says what it is for


def test_toy_pair_uses_two_families_the_project_builds() -> None:
    from mrl_actors.builtin_models import family_of

    spec, _ = load_spec(SPECS[[p.name for p in SPECS].index("toy-pair.toml")])
    assert [p.model for p in spec.policies] == ["builtin:gpt2-bpe", "builtin:llama-sp"]
    assert [family_of(p.model) for p in spec.policies] == ["gpt2", "llama"]


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        (('name = "t"', 'name = "t"\nsteps = "many"'), "run.steps"),
        (('name = "t"', 'name = "t"\nprobe = "magic"'), "run.probe"),
        (('name = "t"', 'name = "t t"'), "run"),
        (('model = "m"', 'model = "m"\n[policies.grpo]\nlr = "fast"'), "policies[0].grpo.lr"),
        (('model = "m"', 'model = "m"\n[policies.grpo]\nepsilon = -1.0'), "policies[0].grpo"),
        (('model = "m"', 'model = "m"\nengine = 3'), "policies[0].engine"),
        (("[run]", '[probes.sgt]\nk = "two"\n[run]'), "probes.sgt.k"),
        (("[run]", '[probes.prp]\nweighting = "huge"\n[run]'), "probes.prp.weighting"),
        (("[run]", "[runn]\nx = 1\n[run]"), "unknown field `runn`"),
    ],
)
def test_a_malformed_spec_names_the_field(patch: tuple[str, str], where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(MINIMAL.replace(*patch), source="bad.toml")
    assert str(err.value).startswith("bad.toml: ") and where in str(err.value)


def test_not_toml_and_no_policies_are_refused() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_spec("[run", source="x.toml")
    with pytest.raises(ConfigError, match="policies"):
        parse_spec('[run]\nname = "t"\npolicies = []', source="x.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec("/nonexistent/spec.toml")
