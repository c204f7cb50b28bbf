"""Every shipped spec parses; a malformed one names its file and field."""

from __future__ import annotations

import subprocess
import sys
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
    from mrl_actors.models.builtin import family_of

    spec, _ = load_spec(SPECS[[p.name for p in SPECS].index("toy-pair.toml")])
    assert [p.model for p in spec.policies] == ["builtin:gpt2-bpe", "builtin:llama-sp"]
    assert [family_of(p.model) for p in spec.policies] == ["gpt2", "llama"]
    assert spec.run.mode == "async"  # the demo runs the asynchronous actor system


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
        (("[run]", "[runn]\nx = 1\n[run]"), "runn: unknown field"),
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


R, P = 'name = "t"', 'model = "m"'


def _run(extra: str) -> tuple[str, str]:
    return (R, f"{R}\n{extra}")


def _policy(extra: str) -> tuple[str, str]:
    return (P, f"{P}\n{extra}")


def _section(block: str) -> tuple[str, str]:
    return ("[run]", f"{block}\n[run]")


# (patch of MINIMAL, the field the error must name): every value here is refused at parse time.
MALFORMED = [
    (_run("steps = 100000000000000000000000"), "run.steps: must be an integer in [1, "),
    (_run("steps = 10000001"), "run.steps"),
    (_run("steps = 0"), "run.steps"),
    (_run("steps = 1e23"), "run.steps"),
    (_run("steps = true"), "run.steps"),
    (_run("prompts_per_step = 0"), "run.prompts_per_step"),
    (_run("group_size = -2"), "run.group_size"),
    (_run("eval_every = 0"), "run.eval_every"),
    (_run("eval_size = 0"), "run.eval_size"),
    (_run("eval_size = -3"), "run.eval_size"),
    (_run("checkpoint_every = 0"), "run.checkpoint_every"),
    (_run("seed = -1"), "run.seed"),
    (_run("seed = 99999999999999999999999"), "run.seed"),
    (_run("stepz = 3"), "run.stepz: unknown field"),
    (('name = "t"', 'name = ""'), "run.name"),
    (('name = "t"', 'name = "a.b"'), "run.name"),
    (('name = "t"', f'name = "{"x" * 129}"'), "run.name"),
    (_section("[probes.sharing]\nmax_staleness = -1"), "probes.sharing.max_staleness"),
    (_section("[probes.sharing]\nwait_for_peers_s = inf"), "probes.sharing.wait_for_peers_s"),
    (_section("[probes.sharing]\nwait_for_peers_s = -1.0"), "probes.sharing.wait_for_peers_s"),
    (_section("[probes.prp]\ncap = nan"), "probes.prp.cap"),
    (_section("[probes.prp]\nmax_per_prompt = 0"), "probes.prp.max_per_prompt"),
    (_section("[probes.prp]\ncoef = -1.0"), "probes.prp.coef"),
    (_section("[probes.xgrpo]\nmin_weight = 0.0"), "probes.xgrpo.min_weight"),
    (_section("[probes.xgrpo]\nmin_weight = 2.0\nmax_weight = 1.0"), "probes.xgrpo.max_weight"),
    (_section("[probes.xgrpo]\nsmoothing = -0.1"), "probes.xgrpo.smoothing"),
    (_section("[probes.sgt]\nk = 0"), "probes.sgt.k"),
    (_section("[probes.sgt]\ngamma = 0.0"), "probes.sgt.gamma"),
    (_section("[probes.sgt]\ncoeff = 1.0"), "probes.sgt.coeff: unknown field"),
    (_section('[task]\nkind = "chess"'), "task.kind"),
    (_section('[task]\nkind = "math"'), "task.math"),
    (_section('[task]\nknd = "math"'), "task.knd: unknown field"),
    (_section("[task.arithmetic]\nsize = 0"), "task.arithmetic.size"),
    (_section("[task.arithmetic]\nsize = -5"), "task.arithmetic.size"),
    (_section("[task.arithmetic]\nops = []"), "task.arithmetic.ops"),
    (_section('[task.arithmetic]\nops = ["/"]'), "task.arithmetic.ops"),
    (_section("[task.arithmetic]\nmax_operand = -1"), "task.arithmetic.max_operand"),
    (_section("[task.arithmetic]\nsizee = 3"), "task.arithmetic.sizee: unknown field"),
    (_section("[task.countdown]\nsize = 0"), "task.countdown.size"),
    (_section("[task.countdown]\nn_numbers = 1"), "task.countdown.n_numbers"),
    (_section("[task.countdown]\nmax_number = 0"), "task.countdown.max_number"),
    (_section('[task.math]\npath = ""'), "task.math.path"),
    (_section('[task.math]\npath = "x.jsonl"\nstyle = "latex"'), "task.math.style"),
    (_section('[task.math]\npath = "x.jsonl"\nmax_chars = 0'), "task.math.max_chars"),
    (_section('[task.math]\npath = "x.jsonl"\nfield = "q"'), "task.math.field: unknown field"),
    (_section("[server]\nreplicas = 3"), "server.replicas"),
    (_section('[server]\nurl = "nats://h:4222"\nreplicas = 9'), "server.replicas"),
    (_section("[server]\nreplicas = 0"), "server.replicas"),
    (_section("[thl.budget]\nmax_nm_byte_share = 1.5"), "thl.budget.max_nm_byte_share"),
    (_section("[thl.budget]\nmax_span_bytes = 0"), "thl.budget.max_span_bytes"),
    (_section("[thl.budget]\nmax_span_tokens = -1"), "thl.budget.max_span_tokens"),
    (_section("[thl.budget]\nmin_one_to_one_share = nan"), "thl.budget.min_one_to_one_share"),
    (_section('[thl]\nlogprob_rule = "first"'), "thl.logprob_rule"),
    (_policy("[policies.grpo]\nlr = nan"), "policies[0].grpo.lr: must be finite"),
    (_policy("[policies.grpo]\nlr = inf"), "policies[0].grpo.lr"),
    (_policy("[policies.grpo]\nlr = -1e-3"), "policies[0].grpo.lr"),
    (_policy("[policies.grpo]\nlr = 0"), "policies[0].grpo.lr"),
    (_policy("[policies.grpo]\nlr = 10.0"), "policies[0].grpo.lr"),
    (_policy("[policies.grpo]\nlrr = 0.1"), "policies[0].grpo.lrr: unknown field"),
    (_policy("[policies.grpo]\nbeta = -0.1"), "policies[0].grpo.beta"),
    (_policy("[policies.grpo]\nepsilon = 1.5"), "policies[0].grpo.epsilon"),
    (_policy("[policies.grpo]\nepsilon_high = nan"), "policies[0].grpo.epsilon_high"),
    (_policy("[policies.grpo]\nadam_beta2 = 1.0"), "policies[0].grpo.adam_beta2"),
    (_policy("[policies.grpo]\nadam_eps = 0.0"), "policies[0].grpo.adam_eps"),
    (_policy("[policies.grpo]\nweight_decay = -inf"), "policies[0].grpo.weight_decay"),
    (_policy("[policies.grpo]\nmax_grad_norm = -1.0"), "policies[0].grpo.max_grad_norm"),
    (_policy("[policies.grpo]\ngrad_accum = 0"), "policies[0].grpo.grad_accum"),
    (_policy('[policies.grpo]\nloss_type = "bnpo"\ngrad_accum = 3'), "policies[0].grpo.grad_accum"),
    (_policy("[policies.grpo]\nis_cap = 0.0"), "policies[0].grpo.is_cap"),
    (
        _policy("[policies.grpo]\nmax_completion_length = 0"),
        "policies[0].grpo.max_completion_length",
    ),
    (_policy('[policies.grpo]\nloss_type = "dr_grpo"'), "policies[0].grpo.max_completion_length"),
    (_policy('[policies.engine]\nkindd = "hf"'), "policies[0].engine.kindd: unknown field"),
    (_policy('[policies.engine]\nkind = "trt"'), "policies[0].engine.kind"),
    (
        _policy("[policies.engine]\ngpu_memory_utilization = 1.5"),
        "policies[0].engine.gpu_memory_utilization",
    ),
    (_policy('[policies.engine]\ndtype = "fp8"'), "policies[0].engine.dtype"),
    (_policy("[policies.engine]\nbatch_size = -1"), "policies[0].engine.batch_size"),
    (
        _policy("[policies.engine.sampling]\ntemperature = 0.5"),
        "policies[0].engine.sampling.temperature: must be equal to grpo.temperature",
    ),
    (_policy("[policies.engine.sampling]\ntop_p = nan"), "policies[0].engine.sampling.top_p"),
    (_policy("[policies.engine.sampling]\ntop_p = 0.0"), "policies[0].engine.sampling.top_p"),
    (_policy('[policies.engine.sampling]\nstop = [""]'), "policies[0].engine.sampling.stop"),
    (
        _policy("[policies.engine.sampling]\nmax_new_tokens = 0"),
        "policies[0].engine.sampling.max_new_tokens",
    ),
    (
        _policy("[policies.engine.sampling]\nmax_tokens = 3"),
        "policies[0].engine.sampling.max_tokens: unknown field",
    ),
    (_policy("tiny = { hidden_size = 64, heads = 5 }"), "policies[0].tiny.hidden_size"),
    (_policy("tiny = { hidden_size = 12, heads = 4 }"), "policies[0].tiny.hidden_size"),
    (_policy("tiny = { layers = -1 }"), "policies[0].tiny.layers"),
    (_policy("tiny = { heads = 0 }"), "policies[0].tiny.heads"),
    (_policy("tiny = { hidden_size = 0 }"), "policies[0].tiny.hidden_size"),
    (_policy("tiny = { warm_start_lr = nan }"), "policies[0].tiny.warm_start_lr"),
    (_policy("tiny = { warm_start_steps = -1 }"), "policies[0].tiny.warm_start_steps"),
    (_policy("tiny = { hidden = 64 }"), "policies[0].tiny.hidden: unknown field"),
    (('model = "m"', 'model = ""'), "policies[0].model"),
    (('model = "m"', ""), "policies[0].model: required, and missing"),
    (('[run]\nname = "t"', ""), "run: required, and missing"),
    (_run("policies = []"), "run.policies: unknown field"),
    (
        _section('[probes.sharing]\nasync_peer_wait = "soon"'),
        "probes.sharing.async_peer_wait: Invalid enum value 'soon'",
    ),
    (_policy('[policies.engine.sampling]\nstop = "x"'), "policies[0].engine.sampling.stop"),
    (_policy("[policies.grpo]\nlr = 1970-01-01"), "policies[0].grpo.lr: Expected `float`"),
    (_policy("[policies.grpo]\nlr = " + "9" * 400), "policies[0].grpo.lr"),
    (('model = "m"', 'model = "m"\n[[policies]]\nname = "a"\nmodel = "m"'), "policies: "),
]


@pytest.mark.parametrize(("patch", "where"), MALFORMED, ids=lambda x: str(x)[:60])
def test_every_malformed_field_is_refused_by_name(patch: tuple[str, str], where: str) -> None:
    text = MINIMAL.replace(*patch, 1)
    assert text != MINIMAL
    with pytest.raises(ConfigError) as err:
        parse_spec(text, source="bad.toml")
    assert str(err.value).startswith(f"bad.toml: {where}"), str(err.value)


def test_the_minimal_spec_itself_parses() -> None:
    """The malformed cases above fail for their patch, not for the spec they patch."""
    spec = parse_spec(MINIMAL, source="ok.toml")
    assert spec.run.steps == 20 and spec.policies[0].name == "a"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[run]\nname = "\xff\xfe"\n', "not UTF-8 text (byte 14"),
        (b"x = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"x = " + b"{a=" * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
        (b"[run\n", "not valid TOML"),
        (b"[run]\nname = 'a\x00'\n", "not valid TOML"),
        (b"[run]\n[run]\n", "not valid TOML"),
    ],
    ids=["utf8", "arrays", "tables", "syntax", "nul", "duplicate"],
)
def test_unreadable_files_are_config_errors_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_direct_construction_is_checked_too() -> None:
    """The checks live in the Structs, so a script building a config gets the same refusal."""
    from mrl_actors.grpo.config import GRPOConfig
    from mrl_actors.probes.config import SharingConfig
    from mrl_actors.rollout.base import SamplingConfig
    from mrl_actors.tasks import ArithmeticConfig
    from mrl_actors.thl.residual import ResidualBudget

    for make, field in [
        (lambda: GRPOConfig(lr=float("nan")), "lr"),
        (lambda: SharingConfig(max_staleness=-1), "max_staleness"),
        (lambda: SamplingConfig(temperature=float("inf")), "temperature"),
        (lambda: ArithmeticConfig(size=0), "size"),
        (lambda: ResidualBudget(max_span_bytes=0), "max_span_bytes"),
    ]:
        with pytest.raises(ConfigError, match=f"^{field}: must be"):
            make()


def test_mrl_run_on_a_bad_spec_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace(*_policy("[policies.grpo]\nlr = nan")), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "mrl_actors.cli", "run", str(path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"mrl: error: {path}: policies[0].grpo.lr: must be finite and > 0 and <= 1, got nan"
    ]
    assert not (tmp_path / "r").exists()
