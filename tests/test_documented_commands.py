"""Every documented command is reached through the installed `dagrun` console script, the way a
user types it: a command missing from the script's entry point, or registered under another
name, fails here (tests elsewhere run the commands only through the script, too)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from console_script import dagrun

REPOSITORY = Path(__file__).resolve().parents[1]
AROUND_THE_SCRIPT = re.compile(r"CliRunner|[\"']-m[\"'],\s*[\"']dagrun")  # in code, not prose
MODULE_PATH_UNDER_TEST = "# python -m dagrun itself is under test"
DOCUMENTED = ["run", "runs", "flows", "cache", "concurrency", "deployments", "serve", "server"]


def listed_commands(help_text: str) -> list[str]:
    """The command names under "Commands:" in a click help page."""
    _, _, section = help_text.partition("\nCommands:\n")
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]


def readme_command_lines() -> list[list[str]]:
    """The words of every `dagrun ...` line in the README's code blocks."""
    lines, in_code = [], False
    for line in (REPOSITORY / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif in_code and re.match(r"\s*(\$\s*)?dagrun\s", line):
            lines.append(line.split("#")[0].replace("$", "", 1).split())
    return lines


@pytest.fixture(scope="module")
def command_help() -> dict[str, subprocess.CompletedProcess[str]]:
    """`dagrun --help` (under "") and `dagrun COMMAND --help` for each documented command."""
    return {command: dagrun(*filter(None, [command]), "--help", timeout=60) for command in ["", *DOCUMENTED]}


def test_every_documented_command_runs_through_the_console_script(command_help) -> None:
    top = command_help[""]
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("Usage: dagrun ")
    assert sorted(listed_commands(top.stdout)) == sorted(DOCUMENTED)
    for command in DOCUMENTED:
        result = command_help[command]
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"Usage: dagrun {command} "), (command, result.stdout)


def test_every_command_line_in_the_readme_names_a_real_command_and_subcommand(command_help) -> None:
    lines = readme_command_lines()
    assert len(lines) >= 10, lines  # the README's command reference was found
    assert {words[1] for words in lines} == set(DOCUMENTED), "pin a newly documented command in DOCUMENTED"
    pairs = set()
    for words in lines:
        subcommands = listed_commands(command_help[words[1]].stdout)
        if subcommands:  # a group: the README's next word must be one of its commands
            assert len(words) > 2 and words[2] in subcommands, (words, subcommands)
            pairs.add((words[1], words[2]))
    for command, subcommand in sorted(pairs):
        result = dagrun(command, subcommand, "--help", timeout=60)
        assert result.returncode == 0, (command, subcommand, result.stderr)
        assert result.stdout.startswith(f"Usage: dagrun {command} {subcommand} "), result.stdout


def test_no_test_reaches_a_command_around_the_console_script() -> None:
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((REPOSITORY / "tests").glob("*.py")) if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if AROUND_THE_SCRIPT.search(line) and MODULE_PATH_UNDER_TEST not in line
    ]
    assert offenders == [], "run commands through console_script.dagrun / DAGRUN:\n" + "\n".join(offenders)
