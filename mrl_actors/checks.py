"""Range checks for config Structs, raised as `ConfigError("field: must be ..., got ...")`.

Each config Struct calls these from `__post_init__`, so a bad value is refused however the Struct
is made (a spec file, a test, a script). When msgspec decodes a spec, it reports the error at the
Struct's path; `spec.parse_spec` joins the two into `policies[1].grpo.lr: must be ...`.
Imports without torch.
"""

from __future__ import annotations

import math

from mrl_actors.errors import ConfigError

MAX_STEPS = 10_000_000  # more learner steps than this is a typo, not a plan


def fail(field: str, rule: str, value: object) -> None:
    raise ConfigError(f"{field}: must be {rule}, got {value!r}")


def check_int(obj: object, field: str, lo: int = 1, hi: int | None = None) -> None:
    """`obj.field` is an int in [lo, hi] (a count is >= 1; `hi` bounds values only a typo makes)."""
    v = getattr(obj, field)
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        fail(field, f">= {lo}" if hi is None else f"an integer in [{lo}, {hi:_}]", v)


def check_float(
    obj: object,
    field: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    optional: bool = False,
) -> None:
    """`obj.field` is a finite number within the given bounds (None passes when `optional`)."""
    v = getattr(obj, field)
    if v is None and optional:
        return
    ok = (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and (gt is None or v > gt)
        and (ge is None or v >= ge)
        and (lt is None or v < lt)
        and (le is None or v <= le)
    )
    if not ok:
        bounds = [f"> {gt}" if gt is not None else "", f">= {ge}" if ge is not None else ""]
        bounds += [f"< {lt}" if lt is not None else "", f"<= {le}" if le is not None else ""]
        rule = " and ".join(["finite", *(b for b in bounds if b)])
        fail(field, rule + (" (or unset)" if optional else ""), v)


def check_finite_tree(value: object, where: str = "") -> None:
    """Every float in a decoded config (TOML tables, arrays) is finite: TOML spells `nan` and
    `inf`, and a NaN passes every range check written as a comparison (`nan <= 0` is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        fail(where or "value", "finite", value)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite_tree(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite_tree(v, f"{where}[{i}]")
