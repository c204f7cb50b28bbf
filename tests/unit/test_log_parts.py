"""Pieces of the log that need no server: naming, filters, ack subjects, predicates, config."""

from __future__ import annotations

import datetime as dt

import pytest

from mrl_actors.errors import ConfigError, LogError
from mrl_actors.see.connection import ConnectionConfig
from mrl_actors.see.inspect import parse_since, parse_where, values_at
from mrl_actors.see.subjects import delivery, filter_subjects, stream_name


def test_names_and_filters() -> None:
    assert stream_name("run-1") == "MRL_run-1"
    with pytest.raises(LogError):
        stream_name("a.b")
    assert filter_subjects("mrl", "r") == ["mrl.r.>"]
    assert filter_subjects("mrl", "r", kinds=["rollout"]) == ["mrl.r.rollout.*"]
    assert filter_subjects("mrl", "r", ["reward", "rollout"], ["qwen"]) == [
        "mrl.r.reward.qwen",
        "mrl.r.rollout.qwen",
    ]


def test_delivery_parses_both_ack_subject_forms() -> None:
    v1 = delivery("$JS.ACK.MRL_r.c.2.17.5.1790000000000000000.3")
    assert (v1.seq, v1.delivered, v1.time_ns, v1.pending) == (17, 2, 1790000000000000000, 3)
    v2 = delivery("$JS.ACK._.ACCHASH.MRL_r.c.1.18.6.1790000000000000001.0.tok")
    assert (v2.seq, v2.delivered, v2.pending) == (18, 1, 0)
    with pytest.raises(LogError):
        delivery("_INBOX.abc")


def test_where_predicates() -> None:
    obj = {"policy_version": 3, "completions": [{"reward": 0.0}, {"reward": 1.0, "text": "a 42"}]}
    assert parse_where("reward>0.5")(obj)
    assert not parse_where("reward>1")(obj)
    assert parse_where("completions.reward == 0")(obj)
    assert parse_where("policy_version>=3")(obj)
    assert parse_where("text~4[0-9]")(obj)
    assert not parse_where("missing=1")(obj)
    assert values_at(obj, "completions.reward") == [0.0, 1.0]
    with pytest.raises(ConfigError):
        parse_where("reward")


def test_since() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert parse_since("10m", now) == now - dt.timedelta(minutes=10)
    assert parse_since("2026-01-01T11:00:00", now) == now - dt.timedelta(hours=1)
    with pytest.raises(ConfigError):
        parse_since("yesterday", now)


def test_connection_config_from_env_hides_secrets() -> None:
    env = {"MRL_NATS_URL": "nats://a:4222,nats://b:4222", "MRL_NATS_TOKEN": "s3cret"}
    cfg = ConnectionConfig.from_env(env, user="alice", password="pw")
    assert cfg.url == "nats://a:4222,nats://b:4222" and cfg.token == "s3cret"
    assert "s3cret" not in repr(cfg) and "pw" not in str(cfg) and "alice" in repr(cfg)
    assert ConnectionConfig.from_env({}, url="nats://x:1").url == "nats://x:1"
    assert cfg.tls_context() is None
    with pytest.raises(ConfigError):
        ConnectionConfig.from_env({}, connect_timeout="soon")
