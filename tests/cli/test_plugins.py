"""Sub-commands from other distributions (``riera.commands`` entry points), ``riera bench`` without
its package, and the rule that the library never imports the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from riera.cli import app, plugins

SRC = Path(__file__).resolve().parents[2] / "src" / "riera"


class _EntryPoint:
    """Stands for an installed entry point: a name, a value, and what loading it gives."""

    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.value, self._obj = name, f"fake_plugin:{name}", obj

    def load(self) -> Any:
        if isinstance(self._obj, BaseException):
            raise self._obj
        return self._obj


def _hello_app() -> typer.Typer:
    hello = typer.Typer(add_completion=False)

    @hello.command()
    def greet(name: str) -> None:
        """Greet someone."""
        typer.echo(f"hello {name}")

    @hello.command()
    def leave() -> None:
        typer.echo("bye")

    return hello


def _with(monkeypatch: pytest.MonkeyPatch, *eps: _EntryPoint) -> None:
    monkeypatch.setattr(plugins, "discover", lambda: {ep.name: ep for ep in eps})


def test_an_entry_point_becomes_a_sub_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _with(monkeypatch, _EntryPoint("hello", _hello_app()))
    result = CliRunner().invoke(app, ["hello", "greet", "Ada"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello Ada\n"
    listing = CliRunner().invoke(app, ["--help"])
    assert listing.exit_code == 0
    assert "hello" in listing.output and "demo" in listing.output


def test_bench_without_its_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with(monkeypatch)
    for args in (["bench"], ["bench", "core", "--quick"], ["bench", "--help"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "riera-bench package, which is not installed" in result.output
        assert "pip install -e ./benchmarks" in result.output
    listing = CliRunner().invoke(app, ["--help"])
    assert "bench" in listing.output and "Not" in listing.output


def test_a_broken_plugin_is_reported_and_the_cli_keeps_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with(monkeypatch, _EntryPoint("broken", ImportError("no module named 'nowhere'")))
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0
    result = CliRunner().invoke(app, ["broken", "x"])
    assert result.exit_code == 1
    assert "failed to load: ImportError: no module named 'nowhere'" in result.output


def test_an_entry_point_that_is_not_a_typer_app_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with(monkeypatch, _EntryPoint("odd", object()))
    result = CliRunner().invoke(app, ["odd"])
    assert result.exit_code == 1
    assert "must name a typer.Typer; got object" in result.output


def test_unknown_commands_are_still_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _with(monkeypatch)
    result = CliRunner().invoke(app, ["nope"])
    assert result.exit_code == 2


def test_discover_reads_the_installed_group() -> None:
    eps = plugins.discover()
    assert all(isinstance(ep, EntryPoint) and ep.group == plugins.GROUP for ep in eps.values())


def test_the_library_never_imports_the_benchmarks() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "import riera_bench" in p.read_text() or "from riera_bench" in p.read_text()
    ]
    assert offenders == []
    code = "import riera, riera.cli, sys; print('riera_bench' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
