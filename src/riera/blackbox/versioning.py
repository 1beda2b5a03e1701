"""Versioning of file groups in Git: content-addressed blobs, one commit per stage, one branch per run.

SAMbA versions the files its black-box programs read and write so that any run's intermediate
data can be looked at later. Git already is the right store: a file's *blob* id is the hash of its
content, so a file that did not change between runs, stages or groups is stored once and costs
nothing; a *commit* per stage makes a run's history readable with any Git tool.

Who does what:

- workers call :meth:`GitRepo.store_files` on the files a task staged or produced (``git
  hash-object -w --stdin-paths``: one process per call, many files; object writes are atomic, so
  workers share the repository safely);
- the driver, when a stage ends, calls :meth:`GitRepo.commit` with every ``path -> blob`` of the
  stage. The run's tree grows stage by stage in a private index file, and the branch
  ``riera/<run id>`` moves to each new commit; nothing touches a working tree;
- ``riera prov checkout`` reads blobs back with :meth:`GitRepo.read_blobs` (``git cat-file --batch``).

The git command-line tool is used (present wherever Git is), not a library: the operations are few
and the CLI's on-disk format is the reference. The repository is bare, ``<home>/versions.git`` by
default (setting ``versions_dir``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from riera.errors import ProvenanceError

log = logging.getLogger(__name__)

MODE_FILE = "100644"
MODE_EXEC = "100755"

_ENV = {
    # Commits need an identity; a fresh machine has no git config. Fixed, so commits of the same
    # tree and parent by different users still differ only by time.
    "GIT_AUTHOR_NAME": "riera",
    "GIT_AUTHOR_EMAIL": "riera@localhost",
    "GIT_COMMITTER_NAME": "riera",
    "GIT_COMMITTER_EMAIL": "riera@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git_available() -> bool:
    return shutil.which("git") is not None


def store_or_warn(repo: str | os.PathLike[str], paths: list[str]) -> list[str | None]:
    """Blob ids of ``paths`` stored in ``repo``; ``None`` each (and a warning) if Git fails.

    Versioning serves the record; a Git failure must not fail the scientist's run."""
    try:
        return list(GitRepo(repo).ensure().store_files(paths))
    except ProvenanceError as err:
        log.warning("file versioning skipped for %d file(s): %s", len(paths), err)
        return [None] * len(paths)


def branch_of(run_id: str) -> str:
    return f"riera/{run_id}"


class GitRepo:
    """A bare repository holding versioned file groups (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _git(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> bytes:
        cmd = ["git", f"--git-dir={self.path}", *args]
        try:
            done = subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                env={**os.environ, **_ENV, **(env or {})},
                check=False,
            )
        except FileNotFoundError as err:
            raise ProvenanceError(
                "file versioning needs the git command-line tool, which is not on PATH; install "
                "git, or turn versioning off with the setting versioning=false "
                "(RIERA_VERSIONING=false)"
            ) from err
        if done.returncode != 0:
            raise ProvenanceError(
                f"git {args[0]} failed in {self.path} (exit code {done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout

    # -- set-up -----------------------------------------------------------------------------------
    def ensure(self) -> GitRepo:
        """Create the bare repository if it does not exist yet (idempotent, safe to race)."""
        if (self.path / "HEAD").exists():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                ["git", "init", "--bare", "--quiet", str(self.path)],
                capture_output=True,
                env={**os.environ, **_ENV},
                check=True,
            )
        except FileNotFoundError as err:
            raise ProvenanceError(
                "file versioning needs the git command-line tool, which is not on PATH; install "
                "git, or set versioning=false (RIERA_VERSIONING=false)"
            ) from err
        except subprocess.CalledProcessError as err:
            raise ProvenanceError(
                f"cannot create the versions repository {self.path}: "
                f"{err.stderr.decode(errors='replace').strip()}"
            ) from err
        return self

    # -- writing ---------------------------------------------------------------------------------
    def store_files(self, paths: list[str]) -> list[str]:
        """Write the files' contents as blobs; their ids, in order (one git process)."""
        if not paths:
            return []
        for p in paths:
            if "\n" in p:
                raise ProvenanceError(f"cannot version {p!r}: file names with newlines")
        out = self._git(
            "hash-object",
            "-w",
            "--no-filters",
            "--stdin-paths",
            input="\n".join(paths).encode() + b"\n",
        )
        ids = out.decode().split()
        if len(ids) != len(paths):
            raise ProvenanceError(f"git hash-object returned {len(ids)} ids for {len(paths)} files")
        return ids

    def commit(
        self,
        run_id: str,
        entries: Iterable[tuple[str, str, str]],
        message: str,
        index_file: str | os.PathLike[str],
    ) -> str:
        """Add ``(mode, blob, path)`` entries to the run's index, commit, move the run's branch.

        ``index_file`` persists between the stages of one run, so each commit holds every file
        the run versioned so far. Returns the commit id.
        """
        env = {"GIT_INDEX_FILE": os.fspath(index_file)}
        lines = "".join(f"{mode} {blob}\t{path}\n" for mode, blob, path in entries)
        if lines:
            self._git("update-index", "--add", "--index-info", input=lines.encode(), env=env)
        tree = self._git("write-tree", env=env).decode().strip()
        ref = f"refs/heads/{branch_of(run_id)}"
        parent = self._rev(ref)
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args += ["-p", parent]
        commit = self._git(*args, env=env).decode().strip()
        self._git("update-ref", ref, commit, *([parent] if parent else []))
        return commit

    def _rev(self, ref: str) -> str | None:
        cmd = ["git", f"--git-dir={self.path}", "rev-parse", "--verify", "--quiet", ref]
        done = subprocess.run(cmd, capture_output=True, env={**os.environ, **_ENV}, check=False)
        if done.returncode != 0:
            return None
        return done.stdout.decode().strip() or None

    # -- reading ---------------------------------------------------------------------------------
    def read_blobs(self, blobs: list[str]) -> Iterator[tuple[str, bytes]]:
        """``(blob id, content)`` for each id, in order (one ``git cat-file --batch``)."""
        if not blobs:
            return
        out = self._git("cat-file", "--batch", input="\n".join(blobs).encode() + b"\n")
        pos = 0
        for blob in blobs:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode().split()
            if len(header) < 3 or header[1] != "blob":
                raise ProvenanceError(
                    f"blob {blob} is missing from {self.path}: {' '.join(header)}; was the "
                    f"repository moved or garbage-collected?"
                )
            size = int(header[2])
            start = end + 1
            yield blob, out[start : start + size]
            pos = start + size + 1

    def branch_head(self, run_id: str) -> str | None:
        return self._rev(f"refs/heads/{branch_of(run_id)}")


def restore(
    store: Any, run_id: str, stage: str, directory: str | os.PathLike[str], repo: Path
) -> list[str]:
    """Write the files a run versioned for ``stage`` into ``directory``; their relative paths.

    ``stage`` is a stage id (``stage-2`` or ``2``: every step of that stage, as
    ``<step>/<group>/<file>``) or a step name (``sort``, ``input``: that step's files, as
    ``<group>/<file>``). ``directory`` must not exist or be empty; it appears complete or not at
    all (the files are written to a sibling temporary directory, then renamed).
    """
    import re
    import tempfile

    from riera.blackbox.programs import check_name

    rows = store.sql(
        "SELECT stage_id, step, op_id, path, blob FROM file_versions WHERE run_id = :r "
        "ORDER BY stage_id, path",
        {"r": run_id},
    ).to_dicts()
    if not rows:
        raise ProvenanceError(
            f"run {run_id} versioned no files: it read no file groups and ran no programs, or "
            f"versioning (or provenance) was off"
        )
    wanted = f"stage-{stage}" if re.fullmatch(r"\d+", stage) else stage
    chosen = [(r, r["path"]) for r in rows if r["stage_id"] == wanted]
    if not chosen:
        chosen = [(r, r["path"].split("/", 1)[1]) for r in rows if stage in (r["step"], r["op_id"])]
    if not chosen:
        stages = sorted({r["stage_id"] for r in rows})
        steps = sorted({r["step"] for r in rows})
        raise ProvenanceError(
            f"run {run_id} has no versioned files for {stage!r}; stages with files: "
            f"{', '.join(stages)}; steps: {', '.join(steps)}"
        )
    missing = [p for r, p in chosen if not r["blob"]]
    if missing:
        raise ProvenanceError(
            f"{len(missing)} file(s) of {stage!r} were not versioned (Git failed during the run), "
            f"e.g. {missing[0]}"
        )
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ProvenanceError(f"{target} exists and is not an empty directory; choose another")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        contents = dict(GitRepo(repo).read_blobs(sorted({r["blob"] for r, _ in chosen})))
        for r, rel in chosen:
            rel = check_name(rel, r["stage_id"], "checkout")
            dest = temp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(contents[r["blob"]])
        if target.exists():
            target.rmdir()
        temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return [rel for _, rel in chosen]
