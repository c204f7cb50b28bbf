"""Fixtures every test tier shares: offline Hugging Face, the real tokenizers in shared/models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test downloads anything: every Hugging Face call must resolve from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("MRL_MODELS_DIR", ROOT.parent / "shared" / "models"))
MODEL_NAMES = ("gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """`../shared/models`: real tokenizers and configs, read-only (tests must not write there)."""
    if not (MODELS_DIR / "gpt2" / "config.json").exists():
        pytest.fail(f"real tokenizers not found at {MODELS_DIR}; set MRL_MODELS_DIR")
    return MODELS_DIR


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Warm-started tiny models, built once per test session (`MRL_CACHE_DIR` points there for
    this process; tests that start processes pass it on)."""
    path = tmp_path_factory.mktemp("mrl-cache")
    old = os.environ.get("MRL_CACHE_DIR")
    os.environ["MRL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MRL_CACHE_DIR", None)
    else:
        os.environ["MRL_CACHE_DIR"] = old
