"""`mrl thl check --text-file`: lines end at "\n" only; a lone surrogate is a clean error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrl_actors.cli import main
from mrl_actors.cli.thl_cmd import read_texts
from mrl_actors.errors import MrlError

# Characters `str.splitlines` breaks at that JSON strings may hold raw: LS, PS, NEL, VT, FF, FS.
BREAKERS = "\u2028\u2029\u0085\x0b\x0c\x1c"


def test_a_raw_u2028_inside_a_json_string_stays_in_its_line(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    texts = [f"a{ch}b" for ch in BREAKERS] + ["plain"]
    # ensure_ascii=False writes the characters raw, which is valid JSON and valid JSON Lines
    f.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    assert "\u2028" in f.read_text(encoding="utf-8")
    assert read_texts(f) == texts


def test_plain_lines_keep_u2028_and_drop_crlf_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes("one\u2028two\r\n\r\nthree\n".encode())
    assert read_texts(f) == ["one\u2028two", "three"]


def test_a_lone_surrogate_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "fine"}\n\n{"text": "bad \\ud800 here"}\n', encoding="utf-8")
    with pytest.raises(MrlError, match=r"t\.jsonl:3: 'text' holds a lone surrogate \(\\ud800"):
        read_texts(f)


def test_errors_name_the_line_an_editor_shows(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "fine"}\n\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(MrlError, match=r"t\.jsonl:4: a JSON line needs a string field 'text'"):
        read_texts(f)


def test_the_cli_prints_one_line_and_exits_2_on_a_lone_surrogate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "\\udfff"}\n', encoding="utf-8")
    argv = ["thl", "check", "--from", "builtin:gpt2-bpe", "--to", "builtin:llama-sp"]
    rc = main([*argv, "--text-file", str(f)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("mrl: error: ") and err.count("\n") == 1
    assert f"{f}:1:" in err and "Traceback" not in err


def test_a_u2028_line_crosses_the_builtin_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"text": " 12\u2028 34\n"}, ensure_ascii=False) + "\n")
    argv = ["thl", "check", "--from", "builtin:gpt2-bpe", "--to", "builtin:llama-sp", "--json"]
    rc = main([*argv, "--text-file", str(f)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["aggregate"]["sequences"] == 1.0
    assert doc["sequences"][0]["exact"] and not doc["sequences"][0]["rejected"]
