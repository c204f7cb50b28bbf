"""The roles of a run as data: what each user may publish, checked without a server."""

from __future__ import annotations

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.see.auth import (
    POLICY_KINDS,
    node_permissions,
    policy_user,
    run_permissions,
    writer_permissions,
)
from mrl_actors.see.natsconf import check_duration, quote


def test_each_policy_publishes_only_on_its_own_event_subjects() -> None:
    users = run_permissions("r", ["a", "b"])
    assert set(users) == {"admin", "reader", "policy-a", "policy-b"}
    for me, other in (("a", "b"), ("b", "a")):
        perms = users[policy_user(me)]
        events = [s for s in perms.publish_allow if s.startswith("mrl.")]
        assert sorted(events) == sorted(f"mrl.r.{k}.{me}" for k in POLICY_KINDS)
        # (the JetStream API subjects name the other's blob bucket, to read it: below)
        writes = [s for s in perms.publish_allow if not s.startswith("$JS.")]
        assert not any(other in s.split(".")[-1] for s in writes)
        assert f"$JS.API.CONSUMER.MSG.NEXT.MRL_r.{other}" in perms.publish_deny
        assert perms.subscribe_allow == (f"_INBOX_policy-{me}.>",)
    admin = ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE")
    for user in ("reader", "policy-a"):
        perms = users[user]
        assert not any(
            s.startswith(f"$JS.API.STREAM.{op}") for s in perms.publish_allow for op in admin
        )
        assert all(f"$JS.API.STREAM.{op}.>" in perms.publish_deny for op in admin)
    assert not any(s.startswith("mrl.") for s in users["reader"].publish_allow)


def test_each_writer_writes_its_own_blob_bucket_and_reads_every_one() -> None:
    """Blob writes are publishes on `$O.<bucket>.>`: a policy's user has its own bucket's
    only (and a node's, its hosted policies'); everyone reads every policy's bucket and the
    shared bucket of older runs."""
    users = run_permissions("r", ["a", "b"])
    node = node_permissions("r", "h1", ["a"], ["a", "b"], user="node-h1")
    for perms, mine in ((users["policy-a"], ["a"]), (users["policy-b"], ["b"]), (node, ["a"])):
        blobs = [s for s in perms.publish_allow if s.startswith("$O.")]
        assert blobs == [f"$O.MRL_r_BLOBS_{p}.>" for p in mine]
    assert not any(s.startswith("$O.") for s in users["reader"].publish_allow)
    for perms in (users["reader"], users["policy-a"], node):
        for stream in ("OBJ_MRL_r_BLOBS", "OBJ_MRL_r_BLOBS_a", "OBJ_MRL_r_BLOBS_b"):
            assert f"$JS.API.DIRECT.GET.{stream}.>" in perms.publish_allow
            assert f"$JS.API.CONSUMER.CREATE.{stream}" in perms.publish_allow


def test_a_node_user_is_the_union_of_its_policies_and_its_node_subject() -> None:
    perms = node_permissions("r", "h1", ["a", "b"], ["a", "b", "c"], user="node-h1")
    events = {s for s in perms.publish_allow if s.startswith("mrl.")}
    start = {"mrl.r.run.mrl", "mrl.r.slots.placement"} | {f"mrl.r.policy.{p}" for p in "abc"}
    own = {f"mrl.r.{k}.{p}" for k in POLICY_KINDS for p in "ab"} | {"mrl.r.node.h1"}
    # MWRA's decisions (any node may hold its lease) and this node's own slot moves
    mwra = {"mrl.r.slots.mwra", "mrl.r.slots.h1"}
    assert events == own | start | mwra  # the start subjects: any node may start the run, once
    assert "$KV.MRL_r_LEASE.>" in perms.publish_allow
    assert not any(
        s.startswith("$KV.") for s in writer_permissions("r", ["a"], ["a"], user="x").publish_allow
    )


def test_names_and_strings_that_would_break_a_config_are_refused() -> None:
    with pytest.raises(ConfigError):
        policy_user('a" }')
    with pytest.raises(ConfigError):
        quote("two\nlines")
    assert quote('a"b\\c $X') == '"a\\"b\\\\c $X"'
    for bad in ('2m" }', "2 m", "forever", ""):
        with pytest.raises(ConfigError, match="sync_interval"):
            check_duration("sync_interval", bad, always=True)
    assert check_duration("sync_interval", "1h2m3s500ms") == "1h2m3s500ms"
