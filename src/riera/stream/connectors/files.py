"""``file:///DIR``: a tailed directory of line files as a source, and a directory of committed
JSON-lines files as a sink.

**Source.** ``DIR`` is one partition: its files, in name order, are one log of newline-terminated
lines, one message per line (the line without its ``\\n``; key None; ``ts_ms`` the number in the
line's ``"ts"`` field when it is a JSON object that has one). Files whose names start with ``.`` or
end in ``.tmp``/``.part`` are in-progress files and are ignored; new files are picked up as they
appear, every ~5 ms while a poll waits. A position is ``[file name, byte offset after the line]``:
the log is read again from exactly there, so the source is replayable. Writers must therefore
keep to the rolling-log discipline: lines are only *appended*, and a new file's name sorts after
every older one (timestamps or zero-padded counters; write elsewhere and rename it in). A trailing
line without its newline is not read while its file is the last one (the writer is still writing
it); once a newer file exists the writer has moved on, and that tail is read as the file's last
line. ``?delete=1`` deletes the files wholly before a committed position (:meth:`release`); a
query that must resume in a deleted or truncated file refuses to start
(:class:`~riera.errors.SourceTrimmedError`). ``lag`` counts the lines not yet read (None past
64 MiB of backlog, which it would have to read to count).

``file://data/in`` (two slashes) names the relative directory ``data/in``; ``file:///srv/in`` the
absolute ``/srv/in``.

**Sink.** Append only: write ``(epoch, seq)`` becomes ``DIR/epoch-EEEEEEEEEE-SSSSSSSSSS.jsonl`` (one
JSON object per row) and the job's commit record ``DIR/_commits/JOB.json`` (``epoch``, ``seq``,
``fence``). Each is written to a hidden temporary file, fsynced and renamed into place (then the
directory is fsynced), the data file first: a crash between the two renames leaves a data file above
the commit record, which the replay of that write *overwrites* (same name), so nothing is
duplicated. A lock file serialises the check-and-commit of concurrent drivers. One job owns a
directory: another job's first write there is refused, since its epoch files would overwrite the
first job's. The data files sort in commit order, so another query can tail the directory with
this module's source. Upserts need keyed storage: ``?mode=upsert`` is refused in favour of
``sqlite://``, ``postgresql://`` or ``redis://``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import quote, unquote

import pyarrow as pa

from riera.errors import FencedError, PlanError, SinkError, SourceTrimmedError, StreamError
from riera.stream.connectors import base
from riera.stream.connectors.rows import encode_rows

POLL_INTERVAL_S = 0.005
_CHUNK = 1 << 20
_LAG_LIMIT = 64 << 20
_SKIP_SUFFIXES = (".tmp", ".part")


def directory_of(url: base.Url) -> Path:
    """The directory a ``file://`` URL names (the raw text, so case and relative paths survive)."""
    rest = url.raw[len("file://") :] if url.raw.startswith("file://") else url.path
    rest = unquote(rest.split("?", 1)[0])
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest:
        raise PlanError(f"{url.raw}: no directory; use file:///ABSOLUTE/DIR or file://RELATIVE/DIR")
    return Path(rest)


def line_ts(line: bytes) -> float | None:
    """The number in a JSON object line's ``"ts"`` field, if it has one (cheap refusal otherwise)."""
    if not line.startswith(b"{") or b'"ts"' not in line:
        return None
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def _log_files(folder: Path) -> list[tuple[str, int]]:
    """``(name, size)`` of the log's files, in name order (one ``scandir``)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
            continue
        try:
            if entry.is_file():
                out.append((name, entry.stat().st_size))
        except FileNotFoundError:  # deleted between scandir and stat
            continue
    out.sort()
    return out


def _position(pos: Any, url: str) -> tuple[str, int] | None:
    if pos is None:
        return None
    try:
        name, offset = pos
        return str(name), int(offset)
    except (TypeError, ValueError) as err:
        raise StreamError(
            f"{url}: {pos!r} is not a file position ([file name, byte offset]); was the "
            f"checkpoint written for another source?"
        ) from err


class DirectoryReader:
    """Reads the directory's log from a position; keeps the current file open between polls."""

    def __init__(self, source: DirectorySource, start: tuple[str, int] | None) -> None:
        self.source = source
        self._pos = start  # None: nothing read yet, from the first file
        self._file: BinaryIO | None = None
        self._file_name: str | None = None

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        if upto is not None and upto.get(0) is None:
            return []  # not named, or logged before anything was read: nothing to read
        bound = None if upto is None else _position(upto[0], self.source.url)
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._read(max_records, bound)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or (bound is not None and self._reached(bound)):
                return out
            time.sleep(min(remaining, POLL_INTERVAL_S))

    def _reached(self, bound: tuple[str, int]) -> bool:
        return self._pos is not None and self._pos >= bound

    def _read(self, max_records: int, bound: tuple[str, int] | None) -> list[base.Message]:
        out: list[base.Message] = []
        files = _log_files(self.source.folder)
        while len(out) < max_records and not (bound is not None and self._reached(bound)):
            current = self._current(files)
            if current is None:
                break
            name, offset, size, last = current
            if offset > size:
                raise SourceTrimmedError(
                    f"{self.source.url}: file {name!r} shrank to {size} bytes while the query was "
                    f"reading it at byte {offset}; a tailed file may only be appended to"
                )
            if offset == size:
                if last:
                    break
                self._pos = self._next_file(files, name)
                continue
            got = self._read_lines(name, offset, max_records - len(out), bound, final=not last)
            if not got:
                if last:
                    break  # only a partial line: wait for its newline
                self._pos = self._next_file(files, name)
                continue
            out += got
            self._pos = got[-1].position[0], got[-1].position[1]
        return out

    def _current(self, files: list[tuple[str, int]]) -> tuple[str, int, int, bool] | None:
        """``(name, offset, size, is the last file)`` of where reading continues, or None."""
        if self._pos is None:
            if not files:
                return None
            self._pos = (files[0][0], 0)
        name, offset = self._pos
        for i, (fname, size) in enumerate(files):
            if fname == name:
                return name, offset, size, i == len(files) - 1
        raise SourceTrimmedError(
            f"{self.source.url}: file {name!r} was deleted or renamed while the query was reading "
            f"it (at byte {offset}); records it never read may be gone. Delete files only after "
            f"the query committed them (?delete=1 does that)."
        )

    def _next_file(self, files: list[tuple[str, int]], name: str) -> tuple[str, int]:
        for fname, _ in files:
            if fname > name:
                return fname, 0
        raise AssertionError("_next_file called on the last file")

    def _open(self, name: str) -> BinaryIO:
        if self._file_name != name or self._file is None:
            if self._file is not None:
                self._file.close()
            self._file = open(self.source.folder / name, "rb")  # noqa: SIM115 (kept open)
            self._file_name = name
        return self._file

    def _read_lines(self, name: str, offset: int, limit: int, bound: tuple[str, int] | None,
                    final: bool) -> list[base.Message]:  # fmt: skip
        try:
            f = self._open(name)
        except FileNotFoundError as err:
            raise SourceTrimmedError(
                f"{self.source.url}: file {name!r} was deleted while the query was reading it "
                f"(at byte {offset}); records it never read are gone. Delete files only after "
                f"the query committed them (?delete=1 does that)."
            ) from err
        f.seek(offset)
        data = f.read(_CHUNK)
        out: list[base.Message] = []
        start = 0
        while len(out) < limit:
            end = data.find(b"\n", start)
            if end < 0:
                if final and start < len(data) and len(data) < _CHUNK:
                    end = len(data)  # the finished file's unterminated last line
                    line, after = data[start:], offset + len(data)
                else:
                    break
            else:
                line, after = data[start:end], offset + end + 1
            if bound is not None and (name, offset + start) >= bound:
                break
            out.append(base.Message(line, None, line_ts(line), 0, [name, after]))
            start = end + 1
            if end >= len(data):
                break
        if not out and len(data) == _CHUNK and data.find(b"\n") < 0:
            raise StreamError(
                f"{self.source.url}: file {name!r} has a line longer than {_CHUNK} bytes at byte "
                f"{offset}; split it into lines of at most 1 MiB"
            )
        return out

    def positions(self) -> dict[int, Any]:
        return {0: None if self._pos is None else [self._pos[0], self._pos[1]]}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class DirectorySource:
    """The lines of a directory's files, in name order, as one partition (see the module doc)."""

    replayable = True

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.folder = directory_of(url)
        self.delete = url.query.get("delete", "0") in ("1", "true", "yes")

    def partitions(self) -> int:
        return 1

    def reader(self, start: dict[int, Any]) -> DirectoryReader:
        for part in start:
            if part != 0:
                raise PlanError(f"{self.url}: a directory source has one partition (0), not {part}")
        pos = _position(start.get(0), self.url)
        if pos is not None:
            name, offset = pos
            try:
                size = (self.folder / name).stat().st_size
            except FileNotFoundError:
                size = -1
            if size < offset:
                why = "no longer exists" if size < 0 else f"is only {size} bytes long"
                raise SourceTrimmedError(
                    f"{self.url}: the query must resume in file {str(self.folder / name)!r} at "
                    f"byte {offset}, but that file {why}: records it never read may be gone. "
                    f"Restore the file, or restart the query with a new checkpoint directory to "
                    f"read what remains."
                )
        return DirectoryReader(self, pos)

    def release(self, upto: dict[int, Any]) -> None:
        pos = _position(upto.get(0), self.url)
        if not self.delete or pos is None:
            return
        for name, _ in _log_files(self.folder):
            if name >= pos[0]:
                break
            (self.folder / name).unlink(missing_ok=True)

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        pos = _position(positions.get(0), self.url) or ("", 0)
        files = [(n, s) for n, s in _log_files(self.folder) if n >= pos[0]]
        backlog = sum(s - (pos[1] if n == pos[0] else 0) for n, s in files)
        if backlog > _LAG_LIMIT:
            return {0: None}
        lines = 0
        for i, (name, size) in enumerate(files):
            offset = pos[1] if name == pos[0] else 0
            if offset >= size:
                continue
            try:
                with open(self.folder / name, "rb") as f:
                    f.seek(offset)
                    data = f.read(size - offset)
            except FileNotFoundError:
                continue
            lines += data.count(b"\n")
            if i < len(files) - 1 and not data.endswith(b"\n"):
                lines += 1  # a finished file's unterminated last line
        return {0: lines}

    def close(self) -> None:
        pass


class DirectoryProducer:
    """Appends one line per message to ``DIR/part-00000.jsonl`` (fsynced per :meth:`send`)."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.folder = directory_of(url)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "part-00000.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        lines = []
        for i, (_, value, _) in enumerate(messages):
            if b"\n" in value:
                raise PlanError(
                    f"{self.url}: message {i} ({value[:60]!r}…) contains a newline, but a "
                    f"directory source reads one message per line; encode it as one line "
                    f"(JSON escapes newlines as \\n)"
                )
            lines.append(value + b"\n")
        data = memoryview(b"".join(lines))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path`` or the old content, never a mix: hidden temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def data_file_name(epoch: int, seq: int) -> str:
    return f"epoch-{epoch:010d}-{seq:010d}.jsonl"


class DirectorySink:
    """Commits each write as one JSON-lines file plus the job's commit record (module doc)."""

    mode: Literal["upsert", "append"] = "append"

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        mode = url.query.get("mode", "append")
        if mode == "upsert":
            raise PlanError(
                f"{url.raw}: a directory sink appends files and cannot replace a key's row; for "
                f"upserts use sqlite:///PATH?table=T, postgresql://HOST/DB?table=T or "
                f"redis://HOST:PORT/DB/STREAM, or drop ?mode=upsert to append"
            )
        if mode != "append":
            raise PlanError(f"{url.raw}: ?mode= must be append for a directory sink; got {mode!r}")
        self.folder = directory_of(url)
        self.commits = self.folder / "_commits"
        self.job = ""

    def open(self, job: str, key: Sequence[str]) -> None:
        if not job:
            raise PlanError(f"{self.url}: a sink needs a job name")
        self.commits.mkdir(parents=True, exist_ok=True)
        self.job = job

    def _check_owner(self) -> None:
        """One job per directory: another job's epochs would overwrite this one's files."""
        own = f"{quote(self.job, safe='')}.json"
        others = sorted(unquote(p.name[: -len(".json")]) for p in self.commits.glob("*.json")
                        if p.name != own)  # fmt: skip
        if others:
            raise PlanError(
                f"{self.url}: the directory holds the output of job {others[0]!r}; job "
                f"{self.job!r} would overwrite its epoch files. Write to another directory, or "
                f"delete {str(self.folder)!r} if that output is no longer wanted."
            )

    @property
    def _record(self) -> Path:
        return self.commits / f"{quote(self.job, safe='')}.json"

    def _read_record(self) -> tuple[int, int, int] | None:
        try:
            data = json.loads(self._record.read_text())
            return int(data["epoch"]), int(data["seq"]), int(data["fence"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            raise SinkError(
                f"{self.url}: the commit record {str(self._record)!r} is damaged ({err}); it was "
                f"not written by Riera. Restore it or write to another directory."
            ) from err

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.commits / f".{quote(self.job, safe='')}.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def committed(self) -> tuple[int, int]:
        record = self._read_record()
        return (record[0], record[1]) if record else (-1, -1)

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        if not self.job:
            raise PlanError(f"{self.url}: call open(job, key) before write")
        with self._locked():
            record = self._read_record()
            if record is None:
                self._check_owner()
            else:
                if fence < record[2]:
                    raise FencedError(
                        f"{self.url}: job {self.job!r} is fenced at token {record[2]}; this "
                        f"driver holds {fence}: another driver took the job over"
                    )
                if (epoch, seq) <= (record[0], record[1]):
                    if fence > record[2]:  # skipped, but its token fences older drivers out
                        fenced = {"epoch": record[0], "seq": record[1], "fence": fence}
                        _write_atomically(self._record, json.dumps(fenced).encode())
                    return False
            target = self.folder / data_file_name(epoch, seq)
            try:
                if rows.num_rows:
                    lines = "".join(payload + "\n" for _, payload in encode_rows(rows, ()))
                    _write_atomically(target, lines.encode())
                elif target.exists():  # left by a crashed attempt at this write
                    target.unlink()
                    _fsync_dir(self.folder)
                record_data = {"epoch": epoch, "seq": seq, "fence": fence}
                _write_atomically(self._record, json.dumps(record_data).encode())
            except OSError as err:
                raise SinkError(
                    f"{self.url}: cannot commit write ({epoch}, {seq}) of job {self.job!r}: {err}"
                ) from err
        return True

    def rows(self) -> list[dict[str, Any]]:
        """Every committed row, in commit order (files above the commit record are left out)."""
        record = self._read_record()
        if record is None:
            return []
        last = data_file_name(record[0], record[1])
        out: list[dict[str, Any]] = []
        for name, _ in _log_files(self.folder):
            if name.startswith("epoch-") and name <= last:
                with open(self.folder / name, "rb") as f:
                    out += [json.loads(line) for line in f if line.strip()]
        return out

    def close(self) -> None:
        pass
