"""Regenerate the docs' screenshots of report.html and compare.html in headless Chromium.

    python tools/screenshot_reports.py --out runs/screenshots        # run, then screenshot
    python tools/screenshot_reports.py --out runs/screenshots --no-run   # screenshot only

Runs the toy-pair spec shortened (a few steps, a small evaluation) under `mrl run --compare`
over three seeds, so the comparison has bands; then renders `<out>/sgt-s0/report.html` and
`<out>/compare.html` full page with `chromium --headless --screenshot` into docs/images/
(report.png, compare.png). Before each screenshot it checks that every plot the page must
have (`<figure data-metric=...>`) is in the HTML, and prints them, so a missing curve is seen
here and not only in the picture.

Needs a Chromium (`apt-get install chromium`, or `CHROMIUM=/path/to/chrome`); the PNGs are
reduced to 64 colours (Pillow) and, if it is installed, `optipng`. Not part of the test suite:
there the pages' plots are checked from the HTML alone (tests/unit/test_report.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrl_actors.report.summary import LEARNING_PLOTS  # noqa: E402

SPEC = ROOT / "runtime" / "experiments" / "toy-pair.toml"
IMAGES = ROOT / "docs" / "images"

# the toy pair, a few steps long: every learning curve of report.html has points
SETS = (
    "run.steps=6",
    "run.eval_every=2",
    "run.eval_size=32",
    "run.prompts_per_step=4",
    "run.group_size=4",
    "run.checkpoint_every=6",
    "policies.gpt2.tiny.warm_start_steps=300",
    "policies.llama.tiny.warm_start_steps=300",
)
SEEDS = "0,1,2"

COMPARE_PLOTS = ("eval_accuracy", "reward_mean")  # per policy, a line per probe with its band


def _chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-headless-shell", "chrome"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    sys.exit("no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/chrome")


def _run(out: Path) -> None:
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", str(SPEC), "--compare"]
    cmd += ["--seeds", SEEDS, "--out", str(out), "--no-progress"]
    for item in SETS:
        cmd += ["--set", item]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _check(page: Path, plots: tuple[str, ...]) -> None:
    text = page.read_text(encoding="utf-8")
    found = sorted(set(re.findall(r'<figure [^>]*data-metric="([^"]+)"', text)))
    missing = [p for p in plots if p not in found]
    print(f"{page}: plots {', '.join(found)}")
    if missing:
        sys.exit(f"{page}: no plot of {', '.join(missing)}")


def _shoot(chromium: str, page: Path, png: Path, width: int) -> None:
    """A full-page screenshot: Chromium's headless screenshot is the window, so a first pass
    measures the page's height at `width` (a copy of the page with a one-line script that
    writes it into the DOM Chromium dumps), the second takes the window that tall."""
    with tempfile.TemporaryDirectory() as tmp:
        base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        base += [f"--user-data-dir={tmp}/profile", "--virtual-time-budget=3000"]
        probe = Path(tmp) / "measure.html"
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"))
        dom = subprocess.run(
            [*base, f"--window-size={width},1000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r'data-height="(\d+)"', dom)
        if found is None:
            sys.exit(f"{page}: Chromium did not report the page's height")
        height = min(int(found.group(1)) + 16, 30000)
        png.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*base, f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()],
            capture_output=True,
            check=True,
        )
    _shrink(png)
    print(f"wrote {png} ({png.stat().st_size // 1024} KiB, {width}x{height})")


def _shrink(png: Path) -> None:
    """64 colours (the pages are flat colours and text: no visible loss), then optipng if
    installed: a full report page from ~600 KiB to ~230 KiB."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(
            colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(png, optimize=True)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", str(png)], check=True)


_MEASURE = (
    "<script>addEventListener('load', () => document.body.setAttribute("
    "'data-height', document.documentElement.scrollHeight))</script>"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "screenshots")
    parser.add_argument("--no-run", action="store_true", help="screenshot an existing --out")
    parser.add_argument("--width", type=int, default=1660)
    args = parser.parse_args()
    chromium = _chromium()
    if not args.no_run:
        _run(args.out)
    report, compare = args.out / "sgt-s0" / "report.html", args.out / "compare.html"
    _check(report, LEARNING_PLOTS)
    _check(compare, COMPARE_PLOTS)
    _shoot(chromium, report, IMAGES / "report.png", args.width)
    _shoot(chromium, compare, IMAGES / "compare.png", args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
