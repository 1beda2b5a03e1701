"""Sub-commands of ``riera`` that other distributions provide, found through entry points.

A distribution adds ``riera NAME …`` by declaring, in its ``pyproject.toml``::

    [project.entry-points."riera.commands"]
    bench = "riera_bench.cli:app"          # a typer.Typer

The library never imports those packages: the group is read (installed metadata only, nothing
imported) when a name is not one of the built-in commands or when the help lists the commands,
and an entry point is loaded only then. ``import riera`` and the built-in commands never scan it.

Commands the documentation promises but whose distribution may be missing (:data:`KNOWN`) stay
visible: without their package they print which package to install and exit with code 1, so
``riera bench`` on a bare install says ``pip install -e ./benchmarks`` instead of "No such command".
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

# Commands are typed ``Any`` here: recent typer releases run on a copy of click of their own
# (``typer._click``), older ones on the ``click`` package, so the only stable names are typer's.

GROUP = "riera.commands"


@dataclass(frozen=True)
class OptionalCommand:
    """A command documented with Riera whose code ships in another distribution."""

    help: str
    distribution: str
    install: str


KNOWN: dict[str, OptionalCommand] = {
    "bench": OptionalCommand(
        help="Benchmarks and studies (markdown reports of repeated runs).",
        distribution="riera-bench",
        install="pip install -e ./benchmarks (from a Riera clone; './benchmarks[peers]' adds "
        "the peer engines), or pip install 'riera-bench[peers]'",
    ),
}


def discover() -> dict[str, EntryPoint]:
    """The installed ``riera.commands`` entry points by command name (nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _exit_with(message: str) -> None:
    from riera.cli import fail

    fail(message)


def as_command(name: str, obj: Any) -> Any:
    """The command of an entry point's object, which must be a ``typer.Typer``."""
    if not isinstance(obj, typer.Typer):
        raise TypeError(
            f"entry point {name!r} in {GROUP!r} must name a typer.Typer; got {type(obj).__name__}"
        )
    command = typer.main.get_command(obj)
    command.name = name
    return command


def _failing(name: str, help: str, message: str) -> Any:
    """A command that accepts anything (even ``--help``) and exits 1 with ``message``."""
    stub = typer.Typer(add_completion=False)

    @stub.command(
        name=name,
        help=help,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def _fail(args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None) -> None:
        _exit_with(message)

    return as_command(name, stub)


def missing(name: str) -> Any:
    """The stand-in for a :data:`KNOWN` command whose distribution is not installed."""
    known = KNOWN[name]
    return _failing(
        name,
        f"{known.help} Not installed: needs {known.distribution}.",
        f"`riera {name}` needs the {known.distribution} package, which is not installed: "
        f"{known.install}",
    )


def load(ep: EntryPoint) -> Any:
    """Import an entry point's command; a broken plugin becomes a command that says why."""
    try:
        return as_command(ep.name, ep.load())
    except Exception as e:  # any error of foreign code: report it, keep the CLI usable
        return _failing(
            ep.name,
            f"(failed to load: {type(e).__name__})",
            f"`riera {ep.name}` comes from {ep.value} ({GROUP} entry point), which failed to "
            f"load: {type(e).__name__}: {e}",
        )


class PluginGroup(TyperGroup):
    """The root group: built-in commands first, then entry points, then known missing ones."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        extra = [n for n in sorted({*discover(), *KNOWN}) if n not in names]
        return [*names, *extra]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = discover().get(cmd_name)
        if ep is not None:
            command = load(ep)
            self.commands[cmd_name] = command  # loaded once per process
            return command
        if cmd_name in KNOWN:
            return missing(cmd_name)
        return None
