"""`zerodoc` as an operator meets it: the help, progress without a terminal, errors that say what to do next."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from zerodoc.cli import Steps, app

runner = CliRunner()


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "120")
    return tmp_path


def test_help_groups_commands_by_task_and_says_where_to_start(home):
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    text = out.output
    for panel in ("Pipeline", "Evidence and sharing", "Operations and audit"):
        assert panel in text
    for command in ("generate", "run", "backfill", "serve", "consumer", "publish", "audit", "cluster"):
        assert f" {command} " in text, command
    # Pipeline commands come first, in the order an operator uses them.
    assert text.index(" generate ") < text.index(" run ") < text.index(" backfill ") < text.index(" serve ")
    assert "First time: `zerodoc generate`, then `zerodoc run`" in text and "ZERODOC_HOME" in text


def test_backfill_help_names_both_dates(home):
    out = runner.invoke(app, ["backfill", "--help"])
    assert out.exit_code == 0
    assert "--start" in out.output and "--end" in out.output and "rerun or resumed" in out.output


def test_dates_in_the_wrong_order_say_how_to_fix_them(home):
    out = runner.invoke(app, ["backfill", "--start", "2026-11-05", "--end", "2026-11-01"])
    assert out.exit_code == 2
    assert "error: --end 2026-11-01 is before --start 2026-11-05" in out.output
    assert "next: swap them: --start 2026-11-01 --end 2026-11-05" in out.output


def test_a_malformed_date_shows_the_expected_form(home):
    out = runner.invoke(app, ["backfill", "--start", "2026-13-01", "--end", "2026-12-01"])
    assert out.exit_code == 2 and "is not a date" in out.output and "YYYY-MM-DD" in out.output


def test_too_few_persons_is_refused_before_any_work(home):
    out = runner.invoke(app, ["generate", "--persons", "10", "--no-load-servers"])
    assert out.exit_code == 2 and "at least 1000 persons" in out.output and "--persons 1000" in out.output
    assert not (home / "sources").exists()


def test_generate_reports_each_step_once_without_a_terminal(home):
    out = runner.invoke(app, ["generate", "--persons", "1000", "--seed", "3", "--no-load-servers"])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("[")]
    assert lines[0].startswith("[1/2] generating 1,000 persons (seed 3)") and "done in" in lines[0]
    assert lines[1].startswith("[2/2] writing the expected counts")
    assert (home / "sources" / "_expected.json").is_file()


def test_steps_print_one_plain_line_per_step_when_not_a_terminal():
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=False, width=100)
    with Steps(3, out) as steps:
        for i in range(3):
            with steps.step(f"date {i}"):
                pass
    lines = buf.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["[1/3] date 0", "[2/3] date 1", "[3/3] date 2"]
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()  # no live redraws, no colour codes


def test_steps_draw_a_live_bar_on_a_terminal():
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, width=100)
    with Steps(2, out) as steps, steps.step("date 0"):
        pass
    assert "[1/2] date 0" in buf.getvalue() and "\x1b" in buf.getvalue()
