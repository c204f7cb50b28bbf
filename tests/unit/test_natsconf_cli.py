"""`python -m mrl_actors.see.natsconf`: the documented command works, bad arguments are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mrl_actors.see.natsconf import main


def test_the_documented_command_prints_every_user(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["RUN", "gpt2", "llama", "--node", "h1=gpt2", "--node", "h2=llama", "--node", "h3="]
    assert main(argv) == 0  # docs/several-hosts.md: h3 hosts nothing until MWRA assigns it
    out = capsys.readouterr().out
    for user in ("admin", "policy-gpt2", "policy-llama", "node-h1", "node-h2", "node-h3"):
        assert f'{{user: "{user}", password: $MRL_PASSWORD_' in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["R.N", "gpt2"], "run 'R.N' must match"),
        (["RUN", "gpt2", "--node", "h1=gpt3"], "['gpt3'] not among ['gpt2']"),
        (["RUN", "gpt2", "--node", "h1"], "expected NAME=P1,P2"),
        (["RUN", "bad name"], "'bad name' must match"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mrl_actors.see.natsconf", *argv], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("python -m mrl_actors.see.natsconf: error: ") and said in line
