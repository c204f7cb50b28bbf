"""Fixtures every test tier shares: offline Hugging Face, real tokenizers (tests/data/models)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# No test downloads anything: every Hugging Face call must resolve from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# GPT-2 (MIT) and Mistral-7B (Apache-2.0) tokenizers and configs ship with the tests; the others
# (Llama-2, Qwen1.5) may not be redistributed and come from beside the checkout when present.
BUNDLED_MODELS = ROOT / "tests" / "data" / "models"
MODELS_DIR = Path(os.environ.get("MRL_MODELS_DIR", ROOT.parent / "shared" / "models"))
MODEL_NAMES = ("gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b")


def find_model(name: str) -> Path:
    """The directory of real model `name`: bundled under tests/data/models, else in
    `$MRL_MODELS_DIR` (or `../shared/models`); where neither has it the calling test is skipped
    with that reason (Llama-2 and Qwen are not redistributed with the repository)."""
    for base in (BUNDLED_MODELS, MODELS_DIR):
        if (base / name / "config.json").exists():
            return base / name
    pytest.skip(f"{name} tokenizer not bundled and not found in {MODELS_DIR}; set MRL_MODELS_DIR")


@pytest.fixture(scope="session")
def model_dir() -> Callable[[str], Path]:
    """`find_model`: `model_dir("llama2-7b")` in a test skips it where Llama-2 is missing."""
    return find_model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with an entry (a symlink, read-only: tests must not write there) per real model
    found by `find_model`: always `gpt2` and `mistral-7b`; `llama2-7b` and `qwen1.5-1.8b` where
    `$MRL_MODELS_DIR` or `../shared/models` has them. Tests of those two call `model_dir(name)`
    so that they are skipped, not failed, where they are missing."""
    view = tmp_path_factory.mktemp("models")
    for name in MODEL_NAMES:
        for base in (BUNDLED_MODELS, MODELS_DIR):
            if (base / name / "config.json").exists():
                (view / name).symlink_to(base / name, target_is_directory=True)
                break
    return view


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Warm-started tiny models, built once per test session (`MRL_CACHE_DIR` points there for
    this process; tests that start processes pass it on). Under pytest-xdist the workers share
    one folder (the cache writes each entry atomically), so no warm start is done twice."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "mrl-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("mrl-cache")
    old = os.environ.get("MRL_CACHE_DIR")
    os.environ["MRL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MRL_CACHE_DIR", None)
    else:
        os.environ["MRL_CACHE_DIR"] = old
