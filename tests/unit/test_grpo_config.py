"""Config Structs: import without torch, decode from TOML with field-named errors."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.grpo.config import GRPOConfig, OffPolicyLoss
from mrl_actors.rollout.base import EngineConfig, SamplingConfig


def test_config_modules_import_without_torch() -> None:
    """Specs are parsed by processes that never train (the CLI, `mrl tail`): keep them light."""
    code = (
        "import sys; import mrl_actors.grpo, mrl_actors.rollout.base, mrl_actors.tasks; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_configs_decode_from_toml() -> None:
    cfg = msgspec.toml.decode(
        b'loss_type = "bnpo"\nscale_rewards = "none"\nepsilon_high = 0.28\nbeta = 0.04\n',
        type=GRPOConfig,
    )
    assert (cfg.loss_type, cfg.scale_rewards, cfg.eps_high, cfg.epsilon_low) == (
        "bnpo",
        "none",
        0.28,
        0.2,
    )
    eng = msgspec.toml.decode(
        b'kind = "vllm"\n[sampling]\nstop = ["\\n"]\ntop_p = 0.9\n', type=EngineConfig
    )
    assert eng.sampling.stop == ("\n",) and eng.sampling.top_p == 0.9
    with pytest.raises(msgspec.ValidationError, match="loss_type"):
        msgspec.toml.decode(b'loss_type = "ppo"\n', type=GRPOConfig)
    with pytest.raises(msgspec.ValidationError, match="lr_typo"):
        msgspec.toml.decode(b"lr_typo = 1.0\n", type=GRPOConfig)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: GRPOConfig(temperature=0),
        lambda: GRPOConfig(epsilon=-0.1),
        lambda: GRPOConfig(is_cap=0),
        lambda: GRPOConfig(beta=-1),
        lambda: OffPolicyLoss(cap=0),
        lambda: SamplingConfig(top_p=0),
        lambda: SamplingConfig(max_new_tokens=0),
    ],
)
def test_invalid_values_raise_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        bad()  # type: ignore[operator]
