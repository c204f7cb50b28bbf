"""Fixtures every test tier shares: offline Hugging Face, the real tokenizers in shared/models."""

from __future__ import annotations

import os
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
