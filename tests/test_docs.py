"""The README stays true to the CLI: every command and flag it has is documented."""

from __future__ import annotations

import argparse

from backfill.cli import build_parser
from backfill.mapping import MAPPINGS_DIR, load_mapping
from tests.conftest import ROOT


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}


def test_every_flag_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in sub.choices.items():
        assert f"backfill {name}" in readme, f"command {name} not in README"
        missing += [f"{name} {flag}" for flag in _flags(command) - {"--help"} if flag not in readme]
    assert missing == []


def test_every_flag_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:600]
    assert "make demo" in head and "make test" in head


def test_every_preset_loads_and_is_documented() -> None:
    docs = (ROOT / "docs" / "mapping.md").read_text() + (ROOT / "README.md").read_text()
    for path in sorted(MAPPINGS_DIR.glob("*.yaml")):
        load_mapping(str(path))
        assert path.name in docs or path.stem in docs, f"{path.name} is not mentioned in the docs"
