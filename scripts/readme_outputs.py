"""README's output blocks, regenerated from what they show, so that no shown output goes stale.

A generated block is a fenced block right after a marker line:

- `<!-- output: cli -->`: each `$ ...` line in the block is a command (run from the repository with the
  venv's `certsync` first on PATH; `$ echo $?` prints the previous command's exit code); the lines after it,
  up to the next `$ ` line, are its output (stdout and stderr, as a terminal shows them).
- `<!-- output: demo 9,10,14 -->`: those steps of one `make demo` run (scripts/demo.sh with DEMO_WORK in a
  temporary folder, shown as `.demo`): each step's `$ command` line and its output, without the demo's
  "(exit N)" line.

`python scripts/readme_outputs.py --check` (tests/test_readme.py runs it) regenerates every block and
fails on a difference; in demo blocks, what changes on every run (times, dates, ids, thumbprints, ports) is
masked on both sides first. `--write` puts the fresh output into README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- output: (cli|demo(?: [0-9,]+)?) -->$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r"^== (\d+)\. ")
VOLATILE = (  # what a fresh demo run changes, masked before comparing
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?( UTC)?"), "<time>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "<date>"),
    (re.compile(r"msg_[0-9A-Za-z]+"), "msg_<id>"),
    (re.compile(r"\b[0-9A-Fa-f]{8,}\b"), "<hex>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\bwait \d+"), "wait <pid>"),
    # a summary's span: "at <time>" when every entry fell in one second, "from <time> to <time>" otherwise
    (re.compile(r"\b(?:at <time>|from <time> to <time>)"), "<when>"),
)


@dataclass
class Block:
    kind: str  # "cli" or "demo 9,10"
    start: int  # index of the first line inside the fence
    end: int  # index of the closing fence
    text: str


def blocks(lines: list[str]) -> list[Block]:
    found = []
    for index, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        if index + 1 >= len(lines) or not lines[index + 1].startswith("```"):
            raise SystemExit(f"README.md:{index + 1}: an output marker must be followed by a fenced block")
        end = next((j for j in range(index + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise SystemExit(f"README.md:{index + 2}: the fenced block is not closed")
        found.append(Block(match.group(1), index + 2, end, "\n".join(lines[index + 2 : end])))
    return found


def environment() -> dict[str, str]:
    venv = ROOT / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    for name in [n for n in env if n.startswith("CERTSYNC_")]:  # the README shows a clean environment
        del env[name]
    env.update({"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"})
    return env


def run_cli(text: str) -> str:
    """The block with each `$ command`'s output regenerated."""
    out: list[str] = []
    status = 0
    for line in text.splitlines():
        if not line.startswith("$ "):
            continue
        command = line[2:]
        if out:
            out.append("")
        out.append(line)
        if command.strip() == "echo $?":
            out.append(str(status))
            continue
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=environment(), capture_output=True, text=True, check=False
        )
        status = done.returncode
        shown = (done.stdout + done.stderr).rstrip("\n")
        if shown:
            out.extend(shown.splitlines())
    # a blank line between commands only where the README had one: keep the output compact
    return "\n".join(_compact(out, text))


def _compact(out: list[str], original: str) -> list[str]:
    """Drop the blank line before `$ echo $?` (the README shows the exit code right under its command)."""
    kept: list[str] = []
    for index, line in enumerate(out):
        if line == "" and index + 1 < len(out) and out[index + 1] == "$ echo $?":
            continue
        kept.append(line)
    return kept


@functools.cache
def demo_transcript() -> dict[int, list[str]]:
    """One `make demo` run: step number -> its `$ command` line and output lines."""
    with tempfile.TemporaryDirectory(prefix="certsync-demo-") as work:
        env = {**environment(), "DEMO_WORK": work}
        done = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
        )
    if done.returncode != 0:
        raise SystemExit(f"make demo failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    steps: dict[int, list[str]] = {}
    current: list[str] | None = None
    shown = ANSI.sub("", done.stdout).replace(work, ".demo")  # as `make demo` prints it
    for raw in shown.splitlines():
        match = STEP.match(raw)
        if match:
            current = steps.setdefault(int(match.group(1)), [])
            continue
        if current is None or re.fullmatch(r"\(exit \d+\)", raw):
            continue
        current.append(raw)
    return {n: _trim(lines) for n, lines in steps.items()}


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


def mask(text: str) -> str:
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def regenerate(readme: str) -> tuple[str, list[str]]:
    """README with every block regenerated, and the blocks that differ (masked where volatile)."""
    lines = readme.split("\n")
    found = blocks(lines)
    transcript: dict[int, list[str]] | None = None
    differ: list[str] = []
    for block in reversed(found):  # bottom up: replacing a block keeps the earlier indexes valid
        if block.kind == "cli":
            fresh = run_cli(block.text)
            same = fresh == block.text
        else:
            if transcript is None:
                transcript = demo_transcript()
            wanted = [int(n) for n in block.kind.split()[1].split(",") if n]
            missing = [n for n in wanted if n not in transcript]
            if missing:
                raise SystemExit(f"README.md: the demo has no step {missing[0]}; fix the marker")
            fresh = "\n\n".join("\n".join(transcript[n]) for n in wanted)
            same = mask(fresh) == mask(block.text)
        if not same:
            differ.append(f"README.md:{block.start}: the {block.kind} block")
            lines[block.start : block.end] = fresh.split("\n")
    return "\n".join(lines), list(reversed(differ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a block differs from a fresh run")
    mode.add_argument("--write", action="store_true", help="write the fresh output into README.md")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    fresh, differ = regenerate(text)
    if args.write:
        README.write_text(fresh, encoding="utf-8")
        print(f"README.md: {len(differ)} block(s) regenerated")
        return 0
    for what in differ:
        print(f"{what} is stale; run: python scripts/readme_outputs.py --write", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
