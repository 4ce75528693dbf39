"""README.md stays true: every output it shows is regenerated and compared (scripts/readme_outputs.py), its
links stay inside the repository, and its CLI synopsis names only commands and options that exist."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from shared.cli.main import _parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outputs():
    spec = importlib.util.spec_from_file_location("readme_outputs", ROOT / "scripts" / "readme_outputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", name="outputs")
def _outputs_fixture():
    return _outputs()


def test_every_output_the_readme_shows_is_what_the_commands_print_today(outputs):
    fresh, differ = outputs.regenerate(README.read_text(encoding="utf-8"))
    assert differ == [], f"{differ}: run python scripts/readme_outputs.py --write"
    assert fresh.count("\n") == README.read_text(encoding="utf-8").count("\n")


def test_a_stale_output_is_found_in_a_cli_block_and_in_a_demo_block(outputs):
    text = README.read_text(encoding="utf-8")
    assert "Outcome: QUEUED" in text and "Subject           CN=mail.contoso.com" in text
    stale = text.replace("Outcome: QUEUED", "Outcome: BLOCKED", 1).replace(
        "Subject           CN=mail.contoso.com", "Subject           CN=mail.fabrikam.com", 1
    )
    _, differ = outputs.regenerate(stale)
    assert len(differ) == 2 and any("cli" in d for d in differ) and any("demo" in d for d in differ)


def test_the_readme_shows_generated_blocks_of_both_kinds(outputs):
    kinds = {b.kind.split()[0] for b in outputs.blocks(README.read_text(encoding="utf-8").split("\n"))}
    assert kinds == {"cli", "demo"}


@pytest.mark.parametrize(
    "document", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
)
def test_links_stay_inside_the_repository_and_lead_somewhere(document):
    path = ROOT / document
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{document} refers to the reference folder beside the repository"
    for target in LINK.findall(text):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{document}: {target} leaves the repository"
        assert resolved.exists(), f"{document}: {target} does not exist"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_cli_synopsis_names_only_real_commands_and_options():
    text = README.read_text(encoding="utf-8")
    section = text.split("## The CLI", 1)[1]
    synopsis = section.split("```", 2)[1]
    commands = _commands()
    current = None
    seen = set()
    for line in synopsis.splitlines():
        match = re.match(r"^certsync (\w+)", line)
        if match:
            current = match.group(1)
            assert current in commands, f"the synopsis shows `certsync {current}`, which does not exist"
            seen.add(current)
        if current is None:
            continue
        options = {o for a in commands[current]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line.split("   ", 1)[0] if match else line):
            assert option in options, f"the synopsis gives `certsync {current}` {option}, which it does not take"
    assert seen == set(commands), f"the synopsis misses {sorted(set(commands) - seen)}"


def test_the_mask_takes_what_a_slower_run_changes(outputs):
    # entries within one second are summed up "at T", entries across seconds "from T to U": the same output
    fast = "7 entries for exch-hybrid-smtp at 2026-12-03T10:00:01Z: 2 event-received."
    slow = "7 entries for exch-hybrid-smtp from 2026-12-03T10:00:01Z to 2026-12-03T10:00:02Z: 2 event-received."
    assert outputs.mask(fast) == outputs.mask(slow)
    assert outputs.mask(fast) != outputs.mask(fast.replace("7 entries", "8 entries"))
