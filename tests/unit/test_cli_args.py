"""Every bad command-line argument is refused while parsing: one `mrl: error:` line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrl_actors.cli import build_parser, main
from mrl_actors.cli.mrl_node import build_parser as node_parser

SPEC = str(Path(__file__).resolve().parents[2] / "runtime" / "experiments" / "toy-pair.toml")


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of `mrl argv`, which must exit 2 before doing anything."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mrl: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["log", "tail", "d", "--seq", "-5"], "argument --seq: must be >= 1, got -5"),
        (["log", "tail", "d", "--seq", "0"], "argument --seq: must be >= 1, got 0"),
        (["log", "tail", "d", "--seq", "x"], "argument --seq: not an integer: 'x'"),
        (["log", "tail", "d", "-n", "-1"], "argument -n/--last: must be >= 0"),
        (["log", "tail", "d", "--limit", "-1"], "argument --limit: must be >= 0"),
        (["log", "tail", "d", "-n", "2", "--limit", "2"], "not allowed with argument -n/--last"),
        (["log", "tail", "d", "--kind", ">"], "argument --kind: unknown event kind '>'"),
        (["log", "tail", "d", "--kind", "roll*"], "unknown event kind 'roll*'"),
        (["log", "export", "d", "--out", "o", "--kind", "nope"], "unknown event kind 'nope'"),
        (["log", "tail", "d", "--where", "text~("], "'(' is not a regular expression"),
        (["log", "tail", "d", "--where", "reward"], "expected FIELD OP VALUE"),
        (["log", "tail", "d", "--since", "yesterday"], "use 10m, 2h, 1d or an ISO time"),
        (["log", "tail", "d", "--policy", "a.b"], "'a.b' is not a name"),
        (["log", "tail", "d", "--source", "*"], "'*' is not a name"),
        (["log", "stats", "d", "--run", "r>"], "'r>' is not a name"),
        (["run", "--steps", "-3", SPEC], "argument --steps: must be in [1, 10_000_000], got -3"),
        (["run", "--steps", "0", SPEC], "argument --steps: must be in [1, 10_000_000], got 0"),
        (["run", "--steps", "100000000", SPEC], "argument --steps: must be in"),
        (["run", SPEC, "--compare", "--seeds", "1,a"], "argument --seeds: not an integer: 'a'"),
        (["run", SPEC, "--compare", "--seeds", "1,,2"], "expected comma-separated integers"),
        (["run", SPEC, "--compare", "--seeds", "-1"], "argument --seeds: must be in [0, "),
        (["run", SPEC, "--compare", "--seeds", "3,3"], "a seed is given twice"),
        (["run", "/nonexistent/spec.toml"], "argument spec: /nonexistent/spec.toml does not exist"),
        (["run", "--resume", "/nonexistent/run"], "argument --resume: /nonexistent/run does not"),
        (["run", SPEC, "--probe", "magic"], "argument --probe: invalid choice: 'magic'"),
        (
            ["run", SPEC, "--metrics-port", "70000"],
            "argument --metrics-port: must be in [0, 65_535]",
        ),
        (["--log-level", "loud", "log", "stats", "d"], "argument --log-level: 'loud': use one of"),
        (
            ["thl", "check", "--from", "/nope", "--to", "/nope", "--text-file", "t"],
            "argument --from: /nope does not exist",
        ),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else "",
)
def test_bad_arguments_are_refused_while_parsing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _refused(argv, capsys)


def test_export_refuses_a_file_or_an_earlier_export_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the log is opened (the run dir here does not even exist)."""
    file = tmp_path / "out.txt"
    file.write_text("keep me")
    missing = str(tmp_path / "no-run")
    assert main(["log", "export", missing, "--out", str(file)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mrl: error: --out {file} is a file: choose a directory, or add --force"]
    assert file.read_text() == "keep me"

    earlier = tmp_path / "export"
    earlier.mkdir()
    (earlier / "events.jsonl").write_text("{}\n")
    assert main(["log", "export", missing, "--out", str(earlier)]) == 2
    assert "already holds an export (events.jsonl): add --force" in capsys.readouterr().err
    assert (earlier / "events.jsonl").read_text() == "{}\n"


def test_good_arguments_parse_to_checked_values() -> None:
    args = build_parser().parse_args(
        ["log", "tail", "d", "--seq", "3", "--kind", "rollout", "--where", "text~a+b"]
    )
    assert args.seq == 3 and args.kind == ["rollout"]
    assert (args.where[0].path, args.where[0].op, args.where[0].value) == ("text", "~", "a+b")
    args = build_parser().parse_args(["run", SPEC, "--compare", "--seeds", "0, 7", "--steps", "2"])
    assert args.seeds == [0, 7] and args.steps == 2
    args = build_parser().parse_args(["--log-level", "DEBUG", "log", "stats", "d"])
    assert args.log_level == "debug"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/nonexistent.toml", "--run-dir", "r"], "argument spec: /nonexistent.toml does not"),
        ([SPEC, "--run-dir", "r", "--node", "a.b"], "argument --node: 'a.b' is not a name"),
        ([SPEC, "--run-dir", "r", "--policies", "a,,b"], "argument --policies: '' is not a name"),
        ([SPEC, "--run-dir", "r", "--server", "http://h:1"], "'http://h:1' is not a NATS URL"),
        ([SPEC, "--run-dir", "r", "--server", "nats://a:1, "], "'' is not a NATS URL"),
        ([SPEC, "--run-dir", "r", "--log-level", "loud"], "argument --log-level: 'loud'"),
        ([SPEC, "--run-dir", "r", "--metrics-port", "-1"], "argument --metrics-port: must be in"),
    ],
)
def test_mrl_node_arguments_are_refused_while_parsing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        node_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mrl-node: error: ") and message in err[0], err


def test_mrl_node_default_node_name_is_a_subject_token() -> None:
    args = node_parser().parse_args([SPEC, "--run-dir", "r", "--server", "nats://h:4222,h2:4222"])
    assert args.node and "." not in args.node and args.server == "nats://h:4222,h2:4222"


def test_metrics_are_off_unless_a_port_is_given() -> None:
    from mrl_actors.cli.args import metrics_config
    from mrl_actors.report.metrics import MetricsConfig

    assert metrics_config(build_parser().parse_args(["run", SPEC])) is None
    assert metrics_config(node_parser().parse_args([SPEC, "--run-dir", "r"])) is None
    args = build_parser().parse_args(["run", SPEC, "--metrics-port", "0"])
    assert metrics_config(args) == MetricsConfig(host="127.0.0.1", port=0)
    args = node_parser().parse_args(
        [SPEC, "--run-dir", "r", "--metrics-port", "9464", "--metrics-host", "0.0.0.0"]
    )
    assert metrics_config(args) == MetricsConfig(host="0.0.0.0", port=9464)
