"""Pieces of a `nats-server` config, rendered from checked values only.

A config is code the server runs: a spec's string pasted into it could open a port or drop the
authorization. So durations must match a strict pattern, names a strict token, and every other
string (paths, passwords, subjects) goes through `quote`, which refuses control characters and
escapes the rest the way the config lexer reads it back; nothing is concatenated unquoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

from mrl_actors.errors import ConfigError
from mrl_actors.see.auth import Permissions, check_user, node_permissions, run_permissions

_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")


def check_duration(field: str, value: str, *, always: bool = False) -> str:
    """A Go duration ("2m", "1m30s", "500ms"); with `always`, also the word "always"."""
    if (always and value == "always") or _DURATION.match(value):
        return value
    what = "'always' or a duration" if always else "a duration"
    raise ConfigError(f"{field} = {value!r} must be {what} like '2m', '30s' or '500ms'")


def quote(value: str) -> str:
    """A NATS config string literal: double-quoted, `\\` and `"` escaped; control characters,
    and anything the config lexer would not read back as itself, refused."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(f"config string {value!r} holds control characters")
    return json.dumps(value, ensure_ascii=False)


def _quote_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def users_block(users: Mapping[str, tuple[str, Permissions]], *, env: bool = False) -> str:
    """`authorization { users = [...] }` for a server config: name -> (password, permissions).

    With `env`, each password is a variable reference instead (`$MRL_PASSWORD_<USER>`, read
    by nats-server from its environment): a config that can be shipped or printed."""
    lines = ["authorization {", "  users = ["]
    for name, (password, perms) in users.items():
        password_value = f"${password_variable(name)}" if env else quote(password)
        deny = f", deny: {_quote_list(perms.publish_deny)}" if perms.publish_deny else ""
        lines.append(
            f"    {{user: {quote(check_user(name))}, password: {password_value}, "
            f"permissions: {{publish: {{allow: {_quote_list(perms.publish_allow)}{deny}}}, "
            f"subscribe: {{allow: {_quote_list(perms.subscribe_allow)}}}}}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def password_variable(user: str) -> str:
    return "MRL_PASSWORD_" + check_user(user).upper().replace("-", "_")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the users of a run for a server config, passwords from environment variables."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mrl_actors.see.natsconf",
        description="Print a run's NATS users and permissions (one user per writer).",
    )
    parser.add_argument("run")
    parser.add_argument("policies", nargs="+")
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME=P1,P2",
        help="also a user for an mrl-node hosting these policies on one connection",
    )
    args = parser.parse_args(argv)
    users = {n: ("", p) for n, p in run_permissions(args.run, args.policies).items()}
    for item in args.node:
        name, _, hosted = item.partition("=")
        user = f"node-{name}"
        perms = node_permissions(args.run, name, hosted.split(","), args.policies, user=user)
        users[user] = ("", perms)
    print(users_block(users, env=True), end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
