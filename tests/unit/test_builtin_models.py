"""Built-in model families: the project's own tokenizers and configs, from nothing outside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.models.builtin import BUILTINS, builtin_dir, corpus, family_of, model_dir
from mrl_actors.spec import effective_toml, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["Q: 7+5=\nA: 12\n", "37*12=-3 ", "héllo ☃ wörld\t\u2028 🙂", "", "<s></s><|endoftext|>"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cache")
    return {name: builtin_dir(f"builtin:{name}", root) for name in BUILTINS}


def test_the_tokenizers_are_trained_deterministically_across_processes(
    built: dict[str, Path], tmp_path: Path
) -> None:
    code = (
        "import sys; from mrl_actors.models.builtin import builtin_dir\n"
        "for n in ('gpt2-bpe', 'llama-sp'): print(builtin_dir('builtin:' + n, sys.argv[1]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    again = [Path(line) for line in out.stdout.split()]
    for name, other in zip(BUILTINS, again, strict=True):
        assert other.name == name and other.parent.name == built[name].parent.name
        for f in ("tokenizer.json", "config.json", "tokenizer_config.json"):
            assert (other / f).read_bytes() == (built[name] / f).read_bytes(), (name, f)


def test_a_second_call_reuses_the_cache(built: dict[str, Path]) -> None:
    d = built["gpt2-bpe"]
    mtime = (d / "tokenizer.json").stat().st_mtime_ns
    assert builtin_dir("builtin:gpt2-bpe", d.parents[2]) == d
    assert (d / "tokenizer.json").stat().st_mtime_ns == mtime


def test_the_two_tokenizers_are_like_gpt2_and_llama2_and_small(built: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from mrl_actors.thl import load_vocab

    gpt2, llama = (AutoTokenizer.from_pretrained(str(built[n])) for n in BUILTINS)
    assert 256 < len(gpt2) <= 1000 and 256 < len(llama) <= 1000
    assert gpt2.eos_token == gpt2.bos_token == "<|endoftext|>"
    assert gpt2.convert_ids_to_tokens(gpt2(" 12")["input_ids"]) == ["Ġ12"]
    assert (llama.bos_token, llama.eos_token, llama.unk_token) == ("<s>", "</s>", "<unk>")
    assert llama.convert_ids_to_tokens(llama.convert_tokens_to_ids(["<0x00>", "<0xFF>"])) == [
        "<0x00>",
        "<0xFF>",
    ]
    assert llama.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<0x00>"]) == [0, 1, 2, 3]
    ids = llama("A: 12\n")["input_ids"]
    assert llama.convert_ids_to_tokens(ids)[0] == "<s>"  # BOS added, as Llama-2's
    assert llama.convert_ids_to_tokens(ids)[-4:] == ["▁", "1", "2", "<0x0A>"]  # split digits
    spec = json.loads((built["llama-sp"] / "tokenizer.json").read_text())
    assert spec["model"]["byte_fallback"] is True
    assert spec["pre_tokenizer"]["pretokenizers"][0]["type"] == "Metaspace"
    for tok in (gpt2, llama):
        # control-token text in a prompt is read as control tokens; as Llama-2, llama-sp drops
        # one leading space on decoding (the THL reads bytes, not decode(), so keeps it)
        for text in TEXTS[:-1]:
            assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    assert load_vocab(str(built["gpt2-bpe"])).kind == "byte-level"
    assert load_vocab(str(built["llama-sp"])).kind == "sentencepiece"
    for name, d in built.items():
        cfg = AutoConfig.from_pretrained(str(d))
        assert cfg.model_type == BUILTINS[name].family == family_of(f"builtin:{name}")
        assert cfg.vocab_size == len(AutoTokenizer.from_pretrained(str(d)))


def test_the_pair_crosses_the_thl_exactly_with_nm_spans(
    built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mrl_actors.tasks import ArithmeticTask
    from mrl_actors.thl import load_vocab, transfer

    monkeypatch.setenv("MRL_CACHE_DIR", str(built["gpt2-bpe"].parents[2]))
    gpt2, llama = load_vocab("builtin:gpt2-bpe"), load_vocab("builtin:llama-sp")
    assert gpt2.fingerprint == load_vocab(str(built["gpt2-bpe"])).fingerprint
    task = ArithmeticTask()
    targets = [task.target_text(item) for item in task.items(0)[:40]]
    for src, dst in ((gpt2, llama), (llama, gpt2)):
        for text in targets + TEXTS:
            ids = np.asarray(src.continuation.encode(text, add_special_tokens=False).ids)
            t = transfer(src, dst, ids)
            assert t.residual.exact and not t.rejected, (src.name, text)
            if text in targets:  # " 7\n": the answer is 1 GPT-2 token and 2 Llama tokens
                assert t.residual.nm_byte_share >= 0.5, (src.name, text)


def test_a_tiny_model_builds_from_a_builtin_directory(built: dict[str, Path]) -> None:
    from mrl_actors.models.load import build_tiny

    for d in built.values():
        model, tok = build_tiny(d, hidden_size=16, layers=1, heads=2)
        assert model.get_input_embeddings().weight.shape == (len(tok), 16)


def test_model_dir_keeps_what_is_not_builtin() -> None:
    assert model_dir("/some/dir") == "/some/dir" and model_dir("org/model") == "org/model"


def test_the_corpus_is_the_tasks_text() -> None:
    lines = corpus()
    assert "Q: 7+5=\nA: 12\n" in lines and len(lines) > 30_000


SPEC = """
[run]
name = "b"
[[policies]]
name = "p"
model = "{model}"
{tiny}
"""


def test_specs_keep_builtin_names_and_check_them(tmp_path: Path) -> None:
    spec = parse_spec(SPEC.format(model="builtin:llama-sp", tiny="tiny = {}"), base_dir=tmp_path)
    assert spec.policies[0].model == "builtin:llama-sp"
    with pytest.raises(ConfigError, match=r"policies\[0\]\.model: unknown built-in .*gpt2-bpe"):
        parse_spec(SPEC.format(model="builtin:nope", tiny="tiny = {}"))
    with pytest.raises(ConfigError, match=r"policies\[0\]\.model: .* has no weights: set `tiny`"):
        parse_spec(SPEC.format(model="builtin:gpt2-bpe", tiny=""))


def test_the_effective_spec_round_trips_with_absolute_model_paths(tmp_path: Path) -> None:
    models = tmp_path / "m" / "gpt2"
    models.mkdir(parents=True)
    spec_file = tmp_path / "specs" / "s.toml"
    spec_file.parent.mkdir()
    spec_file.write_text(SPEC.format(model="../m/gpt2", tiny="tiny = {}"))
    spec, _ = load_spec(spec_file)
    text = effective_toml(spec.with_probe("prp", seed=3, name="b-prp-s3"))
    again = parse_spec(text)
    assert again.policies[0].model == str(models.resolve())
    assert (again.run.probe, again.run.seed, again.run.name) == ("prp", 3, "b-prp-s3")
    for path in sorted((ROOT / "runtime" / "experiments").glob("*.toml")):
        spec, _ = load_spec(path)
        assert parse_spec(effective_toml(spec)) == spec, path


def test_the_shipped_specs_need_nothing_outside_the_repository() -> None:
    for path in sorted((ROOT / "runtime").rglob("*.toml")):
        assert "shared/models" not in path.read_text(), path
    spec, _ = load_spec(ROOT / "runtime" / "experiments" / "toy-pair.toml")
    assert [p.model for p in spec.policies] == ["builtin:gpt2-bpe", "builtin:llama-sp"]
