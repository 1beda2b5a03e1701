"""Black-box programs over file groups, versioned in Git, with domain attributes — end to end.

Real worker processes run real Unix programs (sort, wc, sh, python) in real tmpfs working
directories; provenance lands in a real SQLite store and file versions in a real bare Git
repository, which ``riera prov checkout`` reads back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import riera
import riera.provenance as prov
from riera.config import load_settings
from riera.errors import DomainError, PlanError, ProgramError, ProvenanceError

SAMPLES = {"s1.txt": "pear\napple\nfig\n", "s2.txt": "kiwi\nbanana\n", "s3.txt": "plum\n"}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    for name, text in SAMPLES.items():
        (d / name).write_text(text)
    return d


def q(home: Path, query: str, **params: Any) -> list[dict[str, Any]]:
    return prov.sql(query, params, settings=load_settings(home=str(home))).to_dicts()


def files_of(row: dict[str, Any]) -> dict[str, bytes]:
    return {f["name"]: f["data"] for f in row["files"]}


def staging_leftovers() -> list[str]:
    return [p for p in os.listdir("/dev/shm") if p.startswith("riera-prog-")]


# -- file groups --------------------------------------------------------------------------------


def test_file_groups_by_stem_dir_regex_and_metadata(tmp_path: Path) -> None:
    root = tmp_path / "g"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for rel in ("a/s1.R1.fq", "a/s1.R2.fq", "b/s2.R1.fq"):
        (root / rel).write_text(rel)
    by_stem = riera.read_file_groups(str(root / "**/*.fq"), by="stem").collect()
    assert [(r["group"], sorted(files_of(r))) for r in by_stem] == [
        ("s1", ["s1.R1.fq", "s1.R2.fq"]),
        ("s2", ["s2.R1.fq"]),
    ]
    assert files_of(by_stem[0])["s1.R2.fq"] == b"a/s1.R2.fq"
    by_dir = riera.read_file_groups(str(root), by="dir").collect()
    assert [r["group"] for r in by_dir] == ["a", "b"]
    by_re = riera.read_file_groups(
        str(root / "**/*.fq"),
        by=re.compile(r"\.(?P<group>R\d)\."),
        metadata=lambda key, paths: {"read": int(key[1]), "n": len(paths)},
    ).collect()
    assert [(r["group"], r["read"], r["n"]) for r in by_re] == [("R1", 1, 2), ("R2", 2, 1)]


def test_file_groups_refuse_name_clashes_and_bad_options(tmp_path: Path) -> None:
    for rel in ("x/a.txt", "y/a.txt"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(rel)
    with pytest.raises(PlanError, match=r"two files named 'a\.txt'"):
        riera.read_file_groups(str(tmp_path / "*/a.txt"), by=lambda p: "all")
    relative = riera.read_file_groups(
        str(tmp_path / "*/a.txt"), by=lambda p: "all", names="relative"
    ).collect()
    assert sorted(files_of(relative[0])) == ["x/a.txt", "y/a.txt"]
    with pytest.raises(PlanError, match="by='parent'"):
        riera.read_file_groups(str(tmp_path / "*/a.txt"), by="parent")


# -- running programs ---------------------------------------------------------------------------


def test_a_chain_of_programs_with_placeholders_stdout_and_outputs(home: Path, data: Path) -> None:
    ds = (
        riera.read_file_groups(str(data / "*.txt"))
        .run_program(["sort", "{input}"], stdout="sorted.txt")
        .run_program(
            ["sh", "-c", 'wc -l < sorted.txt > n.txt; echo "group $1" >&2', "sh", "{group}"],
            outputs=["*.txt"],
            keep_inputs=True,
            name="count",
        )
    )
    rows = {r["group"]: r for r in ds.collect()}
    assert sorted(rows) == sorted(SAMPLES)
    for name, text in SAMPLES.items():
        got = files_of(rows[name])
        assert got["sorted.txt"].decode() == "".join(sorted(text.splitlines(True)))
        assert int(got["n.txt"]) == len(text.splitlines())
        assert rows[name]["exit_code"] == 0
        assert rows[name]["stderr"] == f"group {name}\n"
        assert rows[name]["seconds"] >= 0
    assert staging_leftovers() == []


def test_inputs_expand_to_one_argument_per_file_and_columns_fill_placeholders(
    home: Path, tmp_path: Path
) -> None:
    for rel in ("p/a.txt", "p/b.txt"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(rel + "\n")
    ds = riera.read_file_groups(
        str(tmp_path / "p"), by="dir", metadata=lambda k, paths: {"tag": "T" + str(len(paths))}
    ).run_program(["cat", "{inputs}"], stdout="{tag}-all.txt")
    (row,) = ds.collect()
    assert files_of(row) == {"T2-all.txt": b"p/a.txt\np/b.txt\n"}


def test_shell_only_when_asked_and_values_are_quoted(home: Path, tmp_path: Path) -> None:
    (tmp_path / "it's; rm -rf x.txt").write_text("hello\n")
    ds = riera.read_file_groups(str(tmp_path / "*.txt"))
    (row,) = ds.run_program("cat {input} | tr a-z A-Z > up.txt", shell=True).collect()
    assert files_of(row) == {"up.txt": b"HELLO\n"}
    with pytest.raises(PlanError, match="shell=True"):
        ds.run_program("cat {input} > up.txt")
    with pytest.raises(PlanError, match="own"):
        ds.run_program(["cat", "x{inputs}"])
    with pytest.raises(PlanError, match="placeholder"):
        ds.run_program(["cat", "{input"])


def test_a_failing_program_fails_the_task_with_command_and_stderr(home: Path, data: Path) -> None:
    ds = riera.read_file_groups(str(data / "s2.txt")).run_program(
        ["sh", "-c", "echo first >&2; echo 'it broke' >&2; exit 3"], name="breaks"
    )
    with pytest.raises(ProgramError) as info:
        ds.collect()
    text = str(info.value)
    assert "exited with code 3" in text and "it broke" in text and "'s2.txt'" in text
    assert "sh -c" in text
    (p,) = q(home, "SELECT exit_code, stderr_tail, step FROM programs")
    assert p["exit_code"] == 3 and "it broke" in p["stderr_tail"] and p["step"] == "breaks"
    assert q(home, "SELECT status FROM runs") == [{"status": "failed"}]
    # What the failed stage had (its input file) is committed, and the commit says it failed.
    (branch,) = {v["branch"] for v in q(home, "SELECT branch FROM file_versions")}
    log = subprocess.run(
        ["git", f"--git-dir={home / 'versions.git'}", "log", "--format=%s", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "stage-1 (failed): 1 file(s)" in log
    assert staging_leftovers() == []
    kept = riera.read_file_groups(str(data / "s2.txt")).run_program(
        ["sh", "-c", "echo out > o.txt; exit 1"], check=False
    )
    (row,) = kept.collect()
    assert row["exit_code"] == 1 and files_of(row) == {"o.txt": b"out\n"}


def test_timeout_kills_the_process_group(home: Path, data: Path, tmp_path: Path) -> None:
    import psutil

    marker, pidfile = tmp_path / "child-survived", tmp_path / "child.pid"
    child = f"echo $$ > {pidfile}; sleep 3; touch {marker}"
    script = f"sh -c '{child}' & sleep 30"
    ds = riera.read_file_groups(str(data / "s3.txt")).run_program(["sh", "-c", script], timeout=0.5)
    with pytest.raises(ProgramError, match=r"did not finish within 0.5 s"):
        ds.collect()
    pid = int(pidfile.read_text())  # the background child started before the timeout

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(), "a child of the timed-out program outlived it"
    assert not marker.exists()


def test_missing_program_and_missing_files_column_are_clear(home: Path, data: Path) -> None:
    ds = riera.read_file_groups(str(data / "s1.txt"))
    with pytest.raises(ProgramError, match=r"no-such-tool.*installed and on PATH"):
        ds.run_program(["no-such-tool", "{input}"]).collect()
    with pytest.raises(PlanError, match="no 'files' column"):
        riera.from_items([{"a": 1}]).run_program(["true"])
    with pytest.raises(ProgramError, match=r"placeholder \{sample\}.*available"):
        ds.run_program(["echo", "{sample}"]).collect()


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_file_names_cannot_escape_the_working_directory(home: Path, name: str) -> None:
    ds = riera.from_items([{"group": "g", "files": [{"name": name, "data": b"x"}]}]).run_program(
        ["true"]
    )
    with pytest.raises(ProgramError, match="escape its working directory"):
        ds.collect()
    assert staging_leftovers() == []


def test_an_output_symlink_leaving_the_working_directory_is_refused(home: Path, data: Path) -> None:
    ds = riera.read_file_groups(str(data / "s1.txt")).run_program(
        ["ln", "-s", "/etc/passwd", "stolen.txt"]
    )
    with pytest.raises(ProgramError, match="outside its working directory"):
        ds.collect()


# -- provenance of programs, versions and checkout ---------------------------------------------


def test_programs_files_and_versions_are_recorded_and_restored(
    home: Path, data: Path, tmp_path: Path
) -> None:
    ds = riera.read_file_groups(str(data / "*.txt")).run_program(
        ["sort", "-r", "{input}"], stdout="rev.txt", name="rsort"
    )
    ds.collect()
    (run,) = q(home, "SELECT run_id FROM runs")
    progs = q(home, "SELECT * FROM programs ORDER BY group_key")
    assert [p["group_key"] for p in progs] == sorted(SAMPLES)
    first = progs[0]
    assert json.loads(first["argv"]) == ["sort", "-r", "s1.txt"]
    assert first["command"] == "sort -r s1.txt" and first["exit_code"] == 0
    assert json.loads(first["files_read"]) == ["s1.txt"]
    assert [f["name"] for f in json.loads(first["files_written"])] == ["rev.txt"]
    versions = q(home, "SELECT * FROM file_versions ORDER BY path")
    assert {v["path"] for v in versions} == {
        *(f"input/{n}/{n}" for n in SAMPLES),
        *(f"rsort/{n}/rev.txt" for n in SAMPLES),
    }
    assert len({v["commit_sha"] for v in versions}) == 1 and versions[0]["commit_sha"]
    branch = versions[0]["branch"]
    assert branch == f"riera/{run['run_id']}"
    repo = home / "versions.git"
    listed = subprocess.run(
        ["git", f"--git-dir={repo}", "ls-tree", "-r", "--name-only", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "stage-1/rsort/s1.txt/rev.txt" in listed
    # The output files are data elements generated by the tasks, linked to their commit.
    elements = q(
        home,
        "SELECT element_id, content_hash, git_commit FROM elements "
        "WHERE element_id LIKE 'file:stage-1/%'",
    )
    assert len(elements) == 3 and all(
        e["git_commit"] == versions[0]["commit_sha"] for e in elements
    )

    settings = load_settings(home=str(home))
    restored = prov.checkout("last", "rsort", tmp_path / "back", settings=settings)
    assert sorted(restored) == [f"{n}/rev.txt" for n in sorted(SAMPLES)]
    for name, text in SAMPLES.items():
        want = "".join(sorted(text.splitlines(True), reverse=True))
        assert (tmp_path / "back" / name / "rev.txt").read_text() == want
    whole = prov.checkout(run["run_id"][:12], "1", tmp_path / "stage", settings=settings)
    assert len(whole) == 6 and (tmp_path / "stage" / "input" / "s2.txt" / "s2.txt").exists()
    with pytest.raises(ProvenanceError, match="not an empty directory"):
        prov.checkout("last", "rsort", tmp_path / "back", settings=settings)
    with pytest.raises(ProvenanceError, match="steps: input, rsort"):
        prov.checkout("last", "nope", tmp_path / "x", settings=settings)


def test_unchanged_files_cost_nothing_in_git(home: Path, data: Path) -> None:
    ds = riera.read_file_groups(str(data / "*.txt")).run_program(["sort", "{input}"], stdout="o")
    repo = home / "versions.git"

    def objects() -> int:
        out = subprocess.run(
            ["git", f"--git-dir={repo}", "count-objects", "-v"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(re.search(r"^count: (\d+)", out, re.M).group(1))  # type: ignore[union-attr]

    ds.collect()
    after_one = objects()
    ds.collect()
    contents = {*SAMPLES.values(), *("".join(sorted(t.splitlines(True))) for t in SAMPLES.values())}
    blobs = q(home, "SELECT count(DISTINCT blob) AS n FROM file_versions")[0]["n"]
    assert blobs == len(contents) == 5  # "plum\n" sorted is itself: one blob for both
    # The second run's files and trees are all unchanged: it adds one commit object, nothing else.
    assert objects() - after_one == 1
    assert q(home, "SELECT count(DISTINCT branch) AS n FROM file_versions")[0]["n"] == 2


def test_checkout_from_the_cli(home: Path, data: Path, tmp_path: Path) -> None:
    riera.read_file_groups(str(data / "s1.txt")).run_program(
        ["sort", "{input}"], stdout="o.txt", name="s"
    ).collect()
    env = {**os.environ, "RIERA_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "riera", "prov", "checkout", "last", "stage-1", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "restored 2 file(s)" in done.stderr
    assert (tmp_path / "c" / "s" / "s1.txt" / "o.txt").read_text() == "apple\nfig\npear\n"
    shown = subprocess.run(
        [sys.executable, "-m", "riera", "prov", "show", "last", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data_shown = json.loads(shown.stdout)
    assert data_shown["programs"][0]["command"] == "sort s1.txt"
    assert data_shown["files"][0]["files"] >= 1


# -- domain attributes and per-dataset control ---------------------------------------------------


def test_domain_attributes_land_in_a_typed_table(home: Path, data: Path) -> None:
    counted = (
        riera.read_file_groups(str(data / "*.txt"))
        .run_program(["wc", "-l", "{input}"], stdout="n.txt")
        .domain(
            "lines",
            {"sample": "str", "n": "int", "ratio": "float"},
            extract=lambda r: {
                "sample": r["group"],
                "n": int(files_of(r)["n.txt"].split()[0]),
                "ratio": int(files_of(r)["n.txt"].split()[0]) / 4,
            },
        )
    )
    counted.collect()
    got = q(home, "SELECT sample, n FROM domain_lines WHERE ratio >= 0.5 ORDER BY n DESC")
    assert got == [{"sample": "s1.txt", "n": 3}, {"sample": "s2.txt", "n": 2}]
    # Typed columns: the comparison above is numeric, and the element links to the partition.
    (e,) = q(
        home,
        "SELECT count(*) AS c FROM domain_lines d JOIN elements e "
        "ON e.run_id = d.run_id AND e.element_id = d.element_id",
    )
    assert e["c"] == 3
    # Without an extractor the attributes are columns of the same names.
    riera.from_items([{"k": "a", "v": 1.5}, {"k": "b", "v": 3}]).domain(
        "kv", {"k": "str", "v": "float"}
    ).collect()
    assert q(home, "SELECT k FROM domain_kv WHERE v > 2") == [{"k": "b"}]


def test_domain_errors_name_the_dataset_attribute_and_row(home: Path) -> None:
    ds = riera.from_items([{"x": "1"}, {"x": "nope"}], partitions=1)
    with pytest.raises(DomainError, match=r"attribute 'x' of row 1 of 'nums'.*'nope'"):
        ds.domain("nums", {"x": "int"}).collect()
    with pytest.raises(DomainError, match="not declared"):
        ds.domain("nums", {"x": "int"}, extract=lambda r: {"y": 1}).collect()
    with pytest.raises(PlanError, match="lowercase"):
        ds.domain("Bad-Name", {"x": "int"})
    with pytest.raises(PlanError, match="type 'decimal'"):
        ds.domain("nums", {"x": "decimal"})
    with pytest.raises(PlanError, match="no column 'y'"):
        ds.domain("nums", {"y": "int"})


def test_redeclaring_an_attribute_with_another_type_fails_before_tasks(home: Path) -> None:
    riera.from_items([{"x": 1}]).domain("t1", {"x": "int"}).collect()
    with pytest.raises(ProvenanceError, match="cannot be re-declared"):
        riera.from_items([{"x": "a"}]).domain("t1", {"x": "str"}).collect()
    assert q(home, "SELECT count(*) AS n FROM tasks WHERE status = 'ok'")[0]["n"] == 2


def test_provenance_false_drops_elements_versions_and_domain_of_that_dataset(
    home: Path, data: Path
) -> None:
    ds = (
        riera.read_file_groups(str(data / "*.txt"))
        .run_program(["sort", "{input}"], stdout="o.txt")
        .domain("quiet", {"group": "str"})
        .provenance(False)
    )
    assert len(ds.collect()) == 3
    assert q(home, "SELECT count(*) AS n FROM tasks")[0]["n"] >= 1
    for table in ("elements", "file_versions", "programs", "domain_quiet"):
        assert q(home, f"SELECT count(*) AS n FROM {table}")[0]["n"] == 0, table
    # The stage after a shuffle is another dataset: it is captured.
    ds.group_by("exit_code").count().collect()
    assert q(home, "SELECT count(*) AS n FROM elements")[0]["n"] > 0
    with pytest.raises(PlanError, match="records=True needs enabled"):
        ds.provenance(False, records=True)
    with pytest.raises(PlanError, match=r"sample must be in \(0, 1\]"):
        ds.provenance(records=True, sample=2)


def test_versioning_off_records_programs_but_no_files(tmp_path: Path, data: Path) -> None:
    home = tmp_path / "home"
    riera.init(workers=1, progress="off", home=str(home), versioning=False)
    try:
        riera.read_file_groups(str(data / "s1.txt")).run_program(["sort", "{input}"]).collect()
        assert q(home, "SELECT count(*) AS n FROM programs")[0]["n"] == 1
        assert q(home, "SELECT count(*) AS n FROM file_versions")[0]["n"] == 0
        assert not (home / "versions.git").exists()
    finally:
        riera.shutdown()
