"""Black-box programs over file groups, the way SAMbA runs scientific tools inside Spark.

A *file group* is one row holding a set of files and their metadata: column ``files`` is a list of
``{"name": relative path, "data": bytes}`` and any other columns (``group``, a sample id…) are
metadata. :func:`riera.read_file_groups` makes them from files on disk, :meth:`Dataset.run_program`
makes new ones from a program's outputs, and a ``map`` may build them too.

For every row, :class:`RunProgramOp`:

1. stages the group's files into a fresh working directory in memory (``/dev/shm`` by default,
   setting ``staging_dir``): names are checked first, so none can escape the directory (absolute
   paths, ``..``), and two files cannot share a name;
2. builds the command from an argv template — a list of strings with placeholders such as
   ``{input}``, ``{inputs}``, ``{group}``, ``{workdir}`` or any metadata column — and runs it with
   no shell, in a new process group, with the working directory as its cwd. A shell runs only
   when asked (``shell=True``, the template a string, every substituted value quoted);
3. captures stdout (or sends it to a file, ``stdout="out.txt"``), stderr, the exit code, the
   duration, the files the program read (their access times, where the filesystem keeps them) and
   the files it created or changed;
4. returns the files matching ``outputs`` (glob patterns) as the next file group, with ``exit_code``,
   ``seconds``, ``stdout`` and ``stderr`` columns beside the metadata; and removes the directory.

A non-zero exit (with ``check=True``, the default), a timeout, a missing program or an output that
is a symlink leaving the working directory fails the task with :class:`~riera.errors.ProgramError`
naming the operator, the group, the command line and the tail of stderr. With provenance on, each
run is a row of the ``programs`` table and each output file a Git blob (:mod:`riera.provenance.
versioning`), also when the program failed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from riera import taskctx
from riera.errors import ProgramError
from riera.kernels.op import Op

FILE = pa.struct(
    [pa.field("name", pa.string(), nullable=False), pa.field("data", pa.large_binary())]
)
FILES = pa.list_(FILE)
"""The Arrow type of a ``files`` column: one file group per row."""

RESULT_FIELDS = (
    pa.field("files", FILES),
    pa.field("exit_code", pa.int32()),
    pa.field("seconds", pa.float64()),
    pa.field("stdout", pa.large_string()),
    pa.field("stderr", pa.large_string()),
)
RESERVED = ("workdir", "input", "inputs")  # placeholders Riera fills; columns cannot use them
TAIL_BYTES = 4096  # of stdout/stderr kept in provenance and error messages


def default_staging_dir() -> str:
    """``/dev/shm`` (memory) when it exists and is writable, else the system temp directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


# -- names ----------------------------------------------------------------------------------------


def check_name(name: Any, group: str, op: str) -> str:
    """A file name of a group as a safe relative POSIX path, or :class:`ProgramError`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ProgramError(f"{op}: group {group!r} has a file with an invalid name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part == ".." for part in p.parts) or not p.parts:
        raise ProgramError(
            f"{op}: file {name!r} of group {group!r} would escape its working directory (absolute "
            f"paths and '..' are refused); give names relative to the group, like 'reads/a.fq'"
        )
    clean = str(p)
    if clean == ".":
        raise ProgramError(f"{op}: group {group!r} has a file named {name!r}")
    return clean


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


# -- the operator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSpec:
    """What ``Dataset.run_program`` recorded (validated there)."""

    argv: tuple[str, ...] | str | Callable[[dict[str, Any]], Sequence[str]]
    outputs: tuple[str, ...]
    timeout: float | None
    shell: bool
    env: tuple[tuple[str, str], ...]
    check: bool
    keep_inputs: bool
    stdout: str | None
    step: str  # the name the program's files are versioned under (unique in the plan)

    def display(self) -> str:
        if callable(self.argv):
            return f"<{getattr(self.argv, '__qualname__', 'argv')}(row)>"
        if isinstance(self.argv, str):
            return self.argv
        return shlex.join(self.argv)


@dataclass(frozen=True)
class RunProgramOp(Op):
    spec: ProgramSpec
    staging_dir: str

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table  # an empty partition whose producer emitted no rows
        if "files" not in table.column_names:
            raise ProgramError(
                f"{self.name}: needs a 'files' column of file groups (from riera.read_file_groups "
                f"or a previous run_program); the data has columns {table.column_names}"
            )
        keep = [f for f in table.schema if f.name not in {r.name for r in RESULT_FIELDS}]
        schema = pa.schema([*keep, *RESULT_FIELDS])
        rows = [self._run_one(row, i) for i, row in enumerate(table.to_pylist())]
        return pa.Table.from_pylist(rows, schema=schema)

    # -- one file group ---------------------------------------------------------------------------
    def _run_one(self, row: dict[str, Any], i: int) -> dict[str, Any]:
        group = str(row["group"]) if row.get("group") is not None else f"row-{i}"
        ctx = taskctx.current()
        workdir = tempfile.mkdtemp(prefix="riera-prog-", dir=self.staging_dir)
        root = os.path.realpath(workdir)
        proc: subprocess.Popen[bytes] | None = None
        try:
            staged = self._stage(row.get("files") or [], root, group)
            argv, display = self._command(row, sorted(staged), root, group)
            atimes = _reset_atimes(root, staged)
            env = {**os.environ, **dict(self.spec.env), "RIERA_GROUP": group, "RIERA_WORKDIR": root}
            sink: Any = subprocess.PIPE
            if self.spec.stdout is not None:
                out_name = check_name(
                    self._format(self.spec.stdout, row, [], root, group, False), group, self.name
                )
                out_path = os.path.join(root, out_name)
                os.makedirs(os.path.dirname(out_path), exist_ok=True)
                sink = open(out_path, "wb")  # noqa: SIM115 - closed below, after the run
            started = time.time()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as err:
                raise ProgramError(
                    f"{self.name}: cannot start {argv[0]!r} for group {group!r}: {err.strerror}"
                    f"{'; is it installed and on PATH?' if isinstance(err, FileNotFoundError) else ''}"
                    f" (command: {display})"
                ) from err
            finally:
                if sink is not subprocess.PIPE:
                    sink.close()
            try:
                stdout, stderr = proc.communicate(timeout=self.spec.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                stdout, stderr = proc.communicate()
                seconds = time.time() - started
                self._record(
                    ctx,
                    group=group,
                    argv=argv,
                    command=display,
                    exit_code=None,
                    started=started,
                    seconds=seconds,
                    stdout=stdout,
                    stderr=stderr,
                    read=None,
                    written=[],
                    workdir=root,
                )
                raise ProgramError(
                    f"{self.name}: {display} did not finish within {self.spec.timeout:g} s for "
                    f"group {group!r}; it was killed{_tail_note(stderr)}"
                ) from None
            seconds = time.time() - started
            code = proc.returncode
            read = _read_files(root, staged, atimes)
            written = self._written(root, staged)
            outputs = self._outputs(root, staged, written, group)
            blobs = self._version(ctx, group, root, outputs)
            written_files = [{"name": n, "bytes": len(d), "blob": blobs.get(n)} for n, d in outputs]
            self._record(
                ctx,
                group=group,
                argv=argv,
                command=display,
                exit_code=code,
                started=started,
                seconds=seconds,
                stdout=stdout,
                stderr=stderr,
                read=read,
                written=written_files,
                workdir=root,
            )
            if code != 0 and self.spec.check:
                raise ProgramError(
                    f"{self.name}: {display} {_exit_text(code)} for group {group!r} after "
                    f"{seconds:.2f} s{_tail_note(stderr)}"
                )
            result = {k: v for k, v in row.items() if k not in {f.name for f in RESULT_FIELDS}}
            result.update(
                files=[{"name": n, "data": d} for n, d in outputs],
                exit_code=code,
                seconds=seconds,
                stdout=(stdout or b"").decode("utf-8", "replace"),
                stderr=(stderr or b"").decode("utf-8", "replace"),
            )
            return result
        finally:
            if proc is not None:
                _kill_group(proc)  # children left behind by the program
            shutil.rmtree(workdir, ignore_errors=True)

    def _stage(
        self, files: list[dict[str, Any]], root: str, group: str
    ) -> dict[str, tuple[int, int]]:
        """Write the group's files under ``root``; ``name -> (size, mtime_ns)`` as staged."""
        staged: dict[str, tuple[int, int]] = {}
        for f in files:
            if not isinstance(f, dict) or "name" not in f:
                raise ProgramError(
                    f"{self.name}: group {group!r}: each file must be a dict with 'name' and "
                    f"'data'; got {type(f).__name__}"
                )
            name = check_name(f["name"], group, self.name)
            if name in staged:
                raise ProgramError(f"{self.name}: group {group!r} has two files named {name!r}")
            path = os.path.join(root, name)
            data = f.get("data") or b""
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not _inside(os.path.dirname(path), root):
                    raise ProgramError(
                        f"{self.name}: file {name!r} of group {group!r} escapes "
                        f"its working directory"
                    )
                with open(path, "xb") as fh:
                    fh.write(data)
            except OSError as err:
                raise ProgramError(
                    f"{self.name}: cannot stage file {name!r} of group {group!r} in {root}: "
                    f"{err.strerror} (a file and a directory of the same name?)"
                ) from err
            st = os.stat(path)
            staged[name] = (st.st_size, st.st_mtime_ns)
        return staged

    def _fields(
        self, row: dict[str, Any], names: list[str], root: str, group: str
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            k: v for k, v in row.items() if k != "files" and not isinstance(v, list | dict | bytes)
        }
        fields.update(group=group, workdir=root, inputs=list(names))
        if len(names) == 1:
            fields["input"] = names[0]
        return fields

    def _format(
        self,
        template: str,
        row: dict[str, Any],
        names: list[str],
        root: str,
        group: str,
        quote: bool,
    ) -> str:
        fields = self._fields(row, names, root, group)
        out = []
        for literal, field, spec, conv in string.Formatter().parse(template):
            out.append(literal)
            if field is None:
                continue
            if not field.isidentifier():
                raise ProgramError(
                    f"{self.name}: placeholder {{{field}}} in {template!r} is not a plain name; "
                    f"use {{group}}, {{input}}, {{inputs}}, {{workdir}} or a column name"
                )
            if field not in fields:
                extra = (
                    f"; the group has {len(names)} files, so use {{inputs}}"
                    if field == "input"
                    else ""
                )
                raise ProgramError(
                    f"{self.name}: placeholder {{{field}}} in {template!r} has no value for group "
                    f"{group!r}{extra}; available: {', '.join(sorted(fields))}"
                )
            value = fields[field]
            if value is None:
                raise ProgramError(
                    f"{self.name}: placeholder {{{field}}} is null for group {group!r}"
                )
            if isinstance(value, list):
                if not quote:
                    raise ProgramError(
                        f"{self.name}: {{{field}}} expands to several arguments, so it must be an "
                        f"argv element of its own, not part of {template!r}"
                    )
                text = " ".join(shlex.quote(str(v)) for v in value)
            else:
                text = format(str(value) if conv is None else repr(value), spec or "")
                text = shlex.quote(text) if quote else text
            out.append(text)
        return "".join(out)

    def _command(
        self, row: dict[str, Any], names: list[str], root: str, group: str
    ) -> tuple[list[str], str]:
        argv = self.spec.argv
        if callable(argv):
            made = argv(self._fields(row, names, root, group))
            if isinstance(made, str) or not all(isinstance(a, str) for a in made or ()):
                raise ProgramError(
                    f"{self.name}: the argv function must return a list of strings; got {made!r}"
                )
            made_cmd = list(made)
            if not made_cmd:
                raise ProgramError(f"{self.name}: the argv function returned an empty command")
            return made_cmd, shlex.join(made_cmd)
        if isinstance(argv, str):  # shell=True, checked by run_program
            text = self._format(argv, row, names, root, group, True)
            return ["/bin/sh", "-c", text], text
        cmd: list[str] = []
        for token in argv:
            if token in ("{inputs}",):
                cmd.extend(names)
            else:
                cmd.append(self._format(token, row, names, root, group, False))
        return cmd, shlex.join(cmd)

    def _written(self, root: str, staged: Mapping[str, tuple[int, int]]) -> list[str]:
        """Regular files created or changed by the program (relative names, sorted)."""
        changed = []
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if os.path.islink(path) or not os.path.isfile(path):
                    if os.path.islink(path) and rel not in staged:
                        changed.append(rel)
                    continue
                if staged.get(rel) != (st.st_size, st.st_mtime_ns):
                    changed.append(rel)
        return changed

    def _outputs(
        self, root: str, staged: Mapping[str, tuple[int, int]], written: list[str], group: str
    ) -> list[tuple[str, bytes]]:
        candidates = list(written)
        if self.spec.keep_inputs:
            candidates += [
                n for n in staged if n not in written and os.path.isfile(os.path.join(root, n))
            ]
        out = []
        for rel in sorted(set(candidates)):
            if not any(fnmatch.fnmatchcase(rel, pat) for pat in self.spec.outputs):
                continue
            path = os.path.join(root, rel)
            if not _inside(path, root):
                raise ProgramError(
                    f"{self.name}: output {rel!r} of group {group!r} is a symlink to "
                    f"{os.path.realpath(path)!r}, outside its working directory; refused"
                )
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                out.append((rel, fh.read()))
        return out

    def _version(
        self,
        ctx: taskctx.TaskContext | None,
        group: str,
        root: str,
        outputs: list[tuple[str, bytes]],
    ) -> dict[str, str]:
        if ctx is None or ctx.versions is None or not outputs:
            return {}
        from riera.blackbox.versioning import store_or_warn

        names = [n for n, _ in outputs]
        ids = store_or_warn(ctx.versions, [os.path.join(root, n) for n in names])
        for (name, data), blob in zip(outputs, ids, strict=True):
            ctx.record(
                "file",
                {
                    "step": self.spec.step,
                    "op_id": self.name,
                    "group": group,
                    "name": name,
                    "blob": blob,
                    "bytes": len(data),
                },
            )
        return {n: b for n, b in zip(names, ids, strict=True) if b is not None}

    def _record(
        self,
        ctx: taskctx.TaskContext | None,
        *,
        group: str,
        argv: list[str],
        command: str,
        exit_code: int | None,
        started: float,
        seconds: float,
        stdout: bytes | None,
        stderr: bytes | None,
        read: list[str] | None,
        written: list[dict[str, Any]],
        workdir: str,
    ) -> None:
        """One ``programs`` row for provenance (sent with the task's result)."""
        if ctx is None:
            return
        ctx.programs += 1
        ctx.record(
            "program",
            {
                "program_no": ctx.programs,
                "op_id": self.name,
                "step": self.spec.step,
                "group_key": group,
                "argv": argv,
                "command": command,
                "exit_code": exit_code,
                "started_at": started,
                "seconds": seconds,
                "stdout_tail": _tail(stdout),
                "stderr_tail": _tail(stderr),
                "files_read": read,
                "files_written": written,
                "workdir": workdir,
            },
        )


# -- helpers --------------------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes | None) -> str:
    if not data:
        return ""
    return data[-TAIL_BYTES:].decode("utf-8", "replace")


def _tail_note(stderr: bytes | None) -> str:
    text = _tail(stderr).rstrip()
    if not text:
        return " (no stderr)"
    lines = text.splitlines()[-20:]
    return "; stderr (last lines):\n  " + "\n  ".join(lines)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_ATIME_WORKS: dict[str, bool] = {}


def _atime_works(root: str) -> bool:
    """Whether reads update access times in this filesystem (relatime does, noatime does not)."""
    parent = os.path.dirname(root)
    known = _ATIME_WORKS.get(parent)
    if known is None:
        probe = os.path.join(root, ".riera-atime-probe")
        try:
            with open(probe, "wb") as fh:
                fh.write(b"x")
            st = os.stat(probe)
            os.utime(probe, ns=(0, st.st_mtime_ns))
            with open(probe, "rb") as fh:
                fh.read()
            known = os.stat(probe).st_atime_ns != 0
        except OSError:
            known = False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        _ATIME_WORKS[parent] = known
    return known


def _reset_atimes(root: str, staged: Mapping[str, tuple[int, int]]) -> bool:
    """Set staged files' access time to 0 so a read shows; False where reads do not update it."""
    if not staged or not _atime_works(root):
        return False
    for name, (_, mtime) in staged.items():
        os.utime(os.path.join(root, name), ns=(0, mtime))
    return True


def _read_files(root: str, staged: Mapping[str, tuple[int, int]], atimes: bool) -> list[str] | None:
    """Staged files the program read (None: this filesystem does not tell)."""
    if not atimes:
        return None if staged else []
    read = []
    for name in sorted(staged):
        try:
            if os.stat(os.path.join(root, name)).st_atime_ns != 0:
                read.append(name)
        except OSError:
            read.append(name)  # the program removed it, so it touched it
    return read
