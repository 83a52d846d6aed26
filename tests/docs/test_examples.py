"""Every documented example is checked: configs validate, crons are valid, files parse,
and every ``strongroom …`` command line is accepted by the real command-line parser."""

import configparser
import re
import shlex
from pathlib import Path

import pytest
import yaml
from croniter import croniter
from typer.main import get_command

from strongroom.cli.app import app
from strongroom.config import parse_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"


SHELL_OPERATORS = re.compile(r"&&|\|\||;|\||\n")
REDIRECT = re.compile(r"\s(?:\d?>>?|<)\s*\S+|\s2>&1")


def parse_command_line(line: str) -> None:
    """Parse ``strongroom ARGS`` with the app's real parser, without running anything."""
    words = shlex.split(REDIRECT.sub("", " " + line))
    words = words[1:]  # the program itself
    group = get_command(app)
    ctx = group.make_context("strongroom", list(words), resilient_parsing=False)
    args = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
    name, command, rest = group.resolve_command(ctx, args)
    sub = command.make_context(name, rest, parent=ctx)
    inner_args = [*getattr(sub, "_protected_args", []), *sub.args]
    if hasattr(command, "resolve_command") and inner_args:
        inner_name, inner, inner_rest = command.resolve_command(sub, inner_args)
        inner.make_context(inner_name, inner_rest, parent=sub)


def strongroom_lines(text: str) -> list[str]:
    """Every shell command in ``text`` whose program is strongroom."""
    text = re.sub(r"\\\n", " ", text)  # line continuations
    lines = []
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        raw = re.sub(r"\s#\s.*$", "", raw)  # trailing comments
        for segment in SHELL_OPERATORS.split(raw):
            segment = segment.strip().strip("`").strip()
            program = segment.split(" ", 1)[0]
            if program == "strongroom" or program.endswith("/strongroom"):
                lines.append(segment)
    return lines


def test_the_parser_check_itself_catches_a_bad_option():
    parse_command_line("strongroom run --once --config x.toml")
    with pytest.raises(Exception):
        parse_command_line("strongroom run --no-such-option")


def test_example_configuration_validates():
    settings = parse_settings((EXAMPLES / "strongroom.toml").read_text())
    assert settings.targets["shop"].schedule["monthly"] == "0 4 1 * *"


def test_crontab_line():
    line = next(x for x in (EXAMPLES / "crontab").read_text().splitlines() if not x.startswith("#"))
    fields = line.split()
    assert croniter.is_valid(" ".join(fields[:5]))
    commands = strongroom_lines(" ".join(fields[5:]))
    assert len(commands) == 1
    parse_command_line(commands[0])


@pytest.mark.parametrize(
    "unit", ["strongroom.service", "strongroom-backup.service", "strongroom-backup.timer"]
)
def test_systemd_units(unit):
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.read_string((EXAMPLES / unit).read_text())
    if unit.endswith(".service"):
        parse_command_line(parser["Service"]["ExecStart"])
    else:
        assert parser["Timer"]["OnCalendar"] and parser["Install"]["WantedBy"] == "timers.target"


def test_github_actions_workflow():
    workflow = yaml.safe_load((EXAMPLES / "github-actions-backup.yml").read_text())
    assert croniter.is_valid(workflow[True]["schedule"][0]["cron"])  # YAML reads "on" as True
    steps = workflow["jobs"]["backup"]["steps"]
    lines = [c for s in steps for c in strongroom_lines(s.get("run", ""))]
    assert len(lines) == 2
    for line in lines:
        parse_command_line(line)


def test_kubernetes_cronjob():
    job = yaml.safe_load((EXAMPLES / "k8s-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and croniter.is_valid(job["spec"]["schedule"])
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    lines = strongroom_lines(container["args"][0])
    assert lines
    for line in lines:
        parse_command_line(line)


@pytest.mark.parametrize("page", ["operations.md", "../README.md"])
def test_every_command_in_the_guides_parses(page):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [c for block in blocks for c in strongroom_lines(block)]
    assert len(lines) >= 5
    for line in lines:
        parse_command_line(line)
