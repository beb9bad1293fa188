"""`aifb --help` and `aifb COMMAND --help`: every command and every option shown with a one-line
example, and the README's command table naming the same options as the parser."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from aifb.cli import EXAMPLES, build_parser
from support import REPO, VENV_BIN


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Each option by its long name (`--dry-run` for `-n, --dry-run`), -h/--help left out."""
    return {max(a.option_strings, key=len) for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)}


def test_every_command_has_examples_and_top_level_help_shows_one_each():
    out = subprocess.run([str(VENV_BIN / "aifb"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    assert set(EXAMPLES) == set(subparsers())
    for name in subparsers():
        assert re.search(rf"^  aifb {name}\b.*# \S", out.stdout, re.M), f"no example for {name}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_option_has_a_one_line_example_in_its_help(name):
    parser = subparsers()[name]
    text = parser.format_help()
    examples = [cmd for cmd, _ in EXAMPLES[name]]
    for cmd in examples:
        assert cmd in text
    for opt in options(parser):
        assert any(re.search(rf"(^|\s){re.escape(opt)}(\s|$)", cmd) for cmd in examples), \
            f"aifb {name} --help: no example uses {opt}"


def readme_commands() -> dict[str, set[str]]:
    """The options the README's command table names for each command (its first column)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| command | what it does |"):]
    table = table[:table.index("\n\n")]
    found: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        first = row.split(" | ")[0]
        for span in re.findall(r"`(aifb [^`]+)`", first):
            name = span.split()[1]
            found.setdefault(name, set()).update(re.findall(r"--[a-z][a-z-]*", span))
    return found


def test_the_readme_command_table_names_every_command_and_option():
    readme = readme_commands()
    for name, parser in subparsers().items():
        assert name in readme, f"README's command table lacks aifb {name}"
        assert readme[name] == options(parser), f"aifb {name}: README vs --help"


def test_sweep_and_index_take_no_rerun_only_option():
    """--strict belongs to re-runs; sweep and index used to accept it and ignore it."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "--strict"])
    assert parser.parse_args(["rerun", "BM-20260109-001", "--strict"]).strict
