"""Every command and every argument of ``pdrflow`` says what it is for; ``--version`` tells the version."""

from __future__ import annotations

import argparse
from importlib.metadata import version

from helpers import cli

from pdrflow.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: sub for action in actions for name, sub in action.choices.items()}


def _undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction) and action.help:
            continue
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest for choice in action._choices_actions}
            missing += [f"{where} {name}" for name in action.choices if name not in listed]
            missing += [f"{where} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
            continue
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_subcommand_and_argument_has_help_text() -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"run", "resume", "resubmit", "list", "status", "show", "verify", "report", "export", "migrate",
            "db"} <= set(commands)
    missing = _undocumented(parser, "pdrflow")
    for name, sub in commands.items():
        missing += _undocumented(sub, f"pdrflow {name}")
        assert (sub.description or "").strip(), f"pdrflow {name} --help has no description"
    assert not missing, f"no help text: {missing}"


def test_version_is_the_installed_one() -> None:
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pdrflow {version('pdrflow')}"


def test_help_of_a_command_shows_its_arguments_and_the_exit_codes() -> None:
    top = cli("--help")
    assert top.returncode == 0
    assert "130 interrupted" in top.stdout and "list" in top.stdout
    shown = cli("db", "--help")
    assert shown.returncode == 0
    assert "upgrade: apply the schema migrations" in " ".join(shown.stdout.split())
