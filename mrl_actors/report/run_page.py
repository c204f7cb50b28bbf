"""The parts of report.html that say what a run was and how it went, from its log alone.

- `headline(summary)`: one line per policy (held-out accuracy at step 0 and at the end, with
  the change, and the last reward). Policies of different families are never averaged into one
  number: each model has its own line.
- `spec_rows(spec_toml)`: the spec the run started with (its `RunStarted` event), flattened to
  `field = value` rows, policies by name, so hyperparameters are on the page.
- `system_rows(summary)`: how the run ran: its mode (lockstep or the asynchronous actors),
  rollout replicas, the staleness bound, and per policy the weight version reached, the mean
  and largest staleness of what it learned from, and how long its steps waited for rollouts.
"""

from __future__ import annotations

import io
import tomllib
from typing import Any


def headline(summary: dict[str, Any]) -> list[str]:
    out = []
    for name, p in sorted(summary.get("policies", {}).items()):
        acc0, acc = p.get("initial_accuracy"), p.get("final_accuracy")
        reward = p.get("final", {}).get("reward_mean")
        parts = [f"{name} ({p.get('family') or '?'})"]
        if acc0 is not None and acc is not None:
            parts.append(f"held-out accuracy {acc0:.3f} → {acc:.3f} ({acc - acc0:+.3f})")
        elif acc is not None:
            parts.append(f"held-out accuracy {acc:.3f}")
        parts.append(f"{p.get('steps', 0)} steps")
        if reward is not None:
            parts.append(f"last reward {reward:.3f}")
        out.append(", ".join(parts))
    return out


def spec_rows(spec_toml: str | None) -> list[tuple[str, str]]:
    """`section.field = value` rows of the spec text (empty when missing or not TOML)."""
    if not spec_toml:
        return []
    try:
        raw = tomllib.loads(spec_toml)
    except tomllib.TOMLDecodeError:
        return []
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, str(obj)))

    for key, value in raw.items():
        if key == "policies" and isinstance(value, list):
            for i, p in enumerate(value):
                name = p.get("name", i) if isinstance(p, dict) else i
                walk(f"policies.{name}", p)
        else:
            walk(key, value)
    return rows


def system_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[object]]]:
    run = summary.get("run", {})
    spec = run.get("spec", {})
    header = [
        "policy",
        "mode",
        "rollout replicas",
        "max staleness",
        "weight version",
        "staleness mean / max",
        "rollout wait (mean s/step)",
    ]
    rows: list[list[object]] = []
    slots = summary.get("slots", {})
    for name, p in sorted(summary.get("policies", {}).items()):
        replicas: object = spec.get("rollout_replicas", 1)
        if slots.get("placed"):  # the rollout slots it held in the newest assignment
            held = [a for a in slots["assignments"] if a["policy"] == name]
            replicas = f"{sum(a['role'] == 'rollout' for a in held)} slot(s), {slots['source']}"
        series = p.get("series", {})
        final = p.get("final", {})
        waits = [v for _, v in series.get("rollout_wait_s", [])]
        stale_mean, stale_max = final.get("staleness_mean"), final.get("staleness_max")
        rows.append(
            [
                name,
                spec.get("mode", "?"),
                "–" if spec.get("mode") == "lockstep" else replicas,
                spec.get("max_staleness", "–"),
                int(final.get("learner_version", p.get("steps", 0))),
                "–" if stale_mean is None else f"{stale_mean:.2f} / {stale_max or 0:.0f}",
                sum(waits) / len(waits) if waits else None,
            ]
        )
    return header, rows


def run_spec(spec_toml: str | None, mode: str = "") -> dict[str, Any]:
    """The `[run]` table of the spec (mode, replicas, staleness bound) for the summary.

    `mode`: the one the run recorded (`RunStarted.run_mode`), for a text that leaves the mode
    out (such a text meant lockstep before the default became async), as `spec.parse_spec`.
    """
    if not spec_toml:
        return {"mode": mode} if mode else {}
    try:
        raw = tomllib.loads(spec_toml)
    except tomllib.TOMLDecodeError:
        return {"mode": mode} if mode else {}
    run = raw.get("run", {})
    # a field the spec leaves out has RunSection's default (mrl_actors.spec, a floor above)
    defaults = {"mode": "async", "rollout_replicas": 1, "max_staleness": 1}
    if mode:
        defaults["mode"] = mode
    return {k: run.get(k, default) for k, default in defaults.items()}


def inline_svg(fig: Any, ax: Any, title: str) -> str:
    """A finished matplotlib plot of learner steps as SVG markup to inline into a page.

    Fixed margins instead of `tight_layout` (which draws the figure once more to measure it)
    and text kept as SVG text instead of glyph paths: a report has about 20 plots, and these
    two took two thirds of the time of writing one (measured 4.2 s against 1.6 s a report)."""
    import matplotlib
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("learner step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.16)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog: the SVG is inlined into HTML
