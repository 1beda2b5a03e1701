"""File sources and sinks: bad input names the file, row and operator; splitting reads every line once.

Runs against a real worker pool in this process. Functions handed to Riera are defined inside the
tests so cloudpickle ships them by value to the workers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riera

BOM = "\ufeff"


@pytest.fixture(scope="module", autouse=True)
def runtime() -> Iterator[riera.runtime.Runtime]:
    rt = riera.init(workers=2, progress="off")
    yield rt
    riera.shutdown()


def _last_run() -> riera.RunInfo:
    info = riera.get_runtime().last_run
    assert info is not None
    return info


def _write(path: Path, text: str) -> Path:
    """Write ``text`` exactly (no newline translation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def _lines(text: str) -> list[str]:
    """What a line reader should return for a file's text: BOM dropped, \\n or \\r\\n endings."""
    text = text.removeprefix(BOM)
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p.removesuffix("\r") for p in parts]


# -- errors name the file, the row, the operator ------------------------------------------------


def test_read_text_missing_path_fails_at_definition_time(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such-file.txt"
    with pytest.raises(riera.SourceError) as info:
        riera.read_text(missing)  # no action: the definition itself fails
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)

    pattern = str(tmp_path / "*.nothing")
    with pytest.raises(riera.SourceError, match="matched nothing") as info:
        riera.read_text(pattern)
    assert pattern in str(info.value)


def _csv_with_bad_line(path: Path, bad_line: int, bad: str, rows: int = 300) -> Path:
    """A CSV file (header ``a,b`` on line 1) whose line ``bad_line`` (1-based) is ``bad``."""
    lines = ["a,b"] + [f"{i},{i * 2}" for i in range(1, rows)]
    lines[bad_line - 1] = bad
    return _write(path, "\n".join(lines) + "\n")


BAD_CSV = {
    "wrong-column-count": ("136", "Expected 2 columns"),
    "not-an-int": ("136,xx", "invalid value 'xx'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CSV))
@pytest.mark.parametrize("partition_bytes", [None, 256], ids=["one-split", "many-splits"])
def test_malformed_csv_names_file_and_operator(
    tmp_path: Path, kind: str, partition_bytes: int | None
) -> None:
    bad, arrow_text = BAD_CSV[kind]
    path = _csv_with_bad_line(tmp_path / "data.csv", 137, bad)
    ds = riera.read_csv(
        path, schema={"a": pa.int64(), "b": pa.int64()}, partition_bytes=partition_bytes
    )
    with pytest.raises(riera.SourceError) as info:
        ds.collect()
    msg = str(info.value)
    assert str(path) in msg
    assert "malformed CSV" in msg
    assert arrow_text in msg
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "read_csv" in notes and "partition" in notes


@pytest.mark.parametrize("kind", sorted(BAD_CSV))
@pytest.mark.parametrize("partition_bytes", [None, 256], ids=["one-split", "many-splits"])
def test_malformed_csv_names_the_exact_line(
    tmp_path: Path, kind: str, partition_bytes: int | None
) -> None:
    bad, _ = BAD_CSV[kind]
    path = _csv_with_bad_line(tmp_path / "data.csv", 137, bad)
    ds = riera.read_csv(
        path, schema={"a": pa.int64(), "b": pa.int64()}, partition_bytes=partition_bytes
    )
    with pytest.raises(riera.SourceError) as info:
        ds.collect()
    assert re.search(r"\bline 137\b", str(info.value)), str(info.value)


def test_non_numeric_value_in_second_file_names_the_exact_line(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.csv", "a,b\n" + "".join(f"{i},{i}\n" for i in range(50)))
    second = _csv_with_bad_line(tmp_path / "b.csv", 21, "20,notanint", rows=50)
    with pytest.raises(riera.SourceError) as info:
        riera.read_csv([first, second]).collect()
    msg = str(info.value)
    assert str(second) in msg and "notanint" in msg  # holds today
    assert re.search(r"\bline 21\b", msg), msg


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "s": f"v{i}"}) for i in range(300)]
    lines[136] = '{"id": 136, "s": '  # line 137
    path = _write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(riera.SourceError) as info:
        riera.read_json(path, partition_bytes=256).collect()
    assert str(path) in str(info.value)
    assert re.search(r"\bline 137\b", str(info.value)), str(info.value)


def test_csv_files_with_different_headers(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.csv", "id,name\n1,x\n")
    second = _write(tmp_path / "b.csv", "id,title\n2,y\n")
    with pytest.raises(riera.SchemaMismatchError) as info:
        riera.read_csv([first, second])  # definition time
    msg = str(info.value)
    assert str(second) in msg
    assert "title" in msg and "name" in msg
    assert isinstance(info.value, riera.SourceError)


def test_parquet_files_with_different_schemas(tmp_path: Path) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64())}), first)
    pq.write_table(pa.table({"id": pa.array(["1", "2"], pa.string())}), second)
    with pytest.raises(riera.SchemaMismatchError) as info:
        riera.read_parquet(tmp_path)
    msg = str(info.value)
    assert str(second) in msg
    assert "int64" in msg and "string" in msg


def test_user_function_error_is_a_task_error() -> None:
    def explode(row: dict[str, Any]) -> dict[str, Any]:
        if row["id"] == 7:
            raise ValueError(f"cannot process id {row['id']}")
        return row

    with pytest.raises(riera.TaskError) as info:
        riera.range(10, partitions=2).map(explode).collect()
    err = info.value
    assert err.operator.startswith("map(") and "explode" in err.operator
    assert err.partition == 1
    text = str(err)
    assert err.operator in text
    assert "partition 1" in text
    assert "cannot process id 7" in text
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "cannot process id 7"
    assert "explode" in err.remote_traceback


# -- splitting reads every line exactly once -------------------------------------------------------

TEXT_FILES = {
    "a.txt": "alpha\nbeta\ngamma\n" * 12,
    "b.txt": "no\ntrailing\nnewline",
    "c.txt": "crlf one\r\ncrlf two\r\n\r\nafter a blank line\r\n" * 5,
    "d.txt": BOM + "bom first\nbom second\n",
    "e.txt": "",
    "f.txt": "x" * 300 + "\n" + "short\n" + "üñí€ode " * 40 + "\n\n" + "last",
    "sub/g.txt": "nested\nfile\n",
}


@pytest.fixture
def text_dir(tmp_path: Path) -> Path:
    for name, text in TEXT_FILES.items():
        _write(tmp_path / "text" / name, text)
    return tmp_path / "text"


@pytest.mark.parametrize("partition_bytes", [7, 64, None])
def test_read_text_splits_return_every_line_once(
    text_dir: Path, partition_bytes: int | None
) -> None:
    ds = riera.read_text(text_dir, include_paths=True, partition_bytes=partition_bytes)
    table = ds.to_arrow()
    got: dict[str, Counter[str]] = {}
    for row in table.to_pylist():
        got.setdefault(row["path"], Counter())[row["text"]] += 1
    expected = {
        str(text_dir / name): Counter(_lines(text))
        for name, text in TEXT_FILES.items()
        if _lines(text)
    }
    assert got == expected
    if partition_bytes is not None:
        assert _last_run().stages[0].num_tasks > len(TEXT_FILES)  # the files were really split


def test_read_text_whole_files(text_dir: Path) -> None:
    rows = riera.read_text(text_dir, whole_files=True, partition_bytes=64).collect()
    got = {r["path"]: r["text"] for r in rows}
    assert got == {str(text_dir / n): t.removeprefix(BOM) for n, t in TEXT_FILES.items()}


def _csv_rows(lo: int, hi: int) -> list[str]:
    return [f'{i},"name {i}, quoted ""{i}""",{i / 4}' for i in range(lo, hi)]


@pytest.mark.parametrize("partition_bytes", [16, 64, None])
def test_read_csv_splits_return_every_row_once(tmp_path: Path, partition_bytes: int | None) -> None:
    header = "id,name,score"
    files = {
        "a.csv": header + "\n" + "\n".join(_csv_rows(0, 20)) + "\n",
        "b.csv": header + "\r\n" + "\r\n".join(_csv_rows(20, 40)) + "\r\n",
        "c.csv": BOM + header + "\n" + "\n".join(_csv_rows(40, 60)) + "\n",
        "d.csv": header + "\n" + "\n".join(_csv_rows(60, 80)),  # no trailing newline
        "e.csv": "",
        "f.csv": header + "\n",  # header only
    }
    for name, text in files.items():
        _write(tmp_path / "csv" / name, text)
    table = riera.read_csv(tmp_path / "csv", partition_bytes=partition_bytes).to_arrow()
    assert table.schema.names == ["id", "name", "score"]
    assert table.schema.field("id").type == pa.int64()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": i, "name": f'name {i}, quoted "{i}"', "score": i / 4} for i in range(80)]


def test_read_csv_header_longer_than_a_split(tmp_path: Path) -> None:
    names = [f"a_rather_long_column_name_{i}" for i in range(8)]
    body = "".join(",".join(str(r * 10 + c) for c in range(8)) + "\n" for r in range(30))
    path = _write(tmp_path / "wide.csv", ",".join(names) + "\n" + body)
    table = riera.read_csv(path, partition_bytes=16).to_arrow()
    assert table.column_names == names
    assert sorted(table.column(names[0]).to_pylist()) == [r * 10 for r in range(30)]


@pytest.mark.parametrize("partition_bytes", [16, 64, None])
def test_read_json_splits_return_every_row_once(
    tmp_path: Path, partition_bytes: int | None
) -> None:
    def jl(lo: int, hi: int, sep: str = "\n") -> str:
        return sep.join(
            json.dumps({"id": i, "s": f"välue {i}"}, ensure_ascii=False) for i in range(lo, hi)
        )

    files = {
        "a.jsonl": jl(0, 20) + "\n",
        "b.jsonl": jl(20, 40, "\r\n") + "\r\n",
        "c.jsonl": BOM + jl(40, 60) + "\n",
        "d.jsonl": jl(60, 80),  # no trailing newline
        "e.jsonl": "",
        "f.jsonl": "\n" + jl(80, 90, "\n\n") + "\n\n",  # blank lines
    }
    for name, text in files.items():
        _write(tmp_path / "json" / name, text)
    table = riera.read_json(tmp_path / "json", partition_bytes=partition_bytes).to_arrow()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": i, "s": f"välue {i}"} for i in range(90)]


def test_read_files_returns_path_size_and_bytes(tmp_path: Path) -> None:
    contents = {
        "one.bin": bytes(range(256)),
        "two.txt": b"line\r\nwith crlf\r\n",
        "empty": b"",
        "deep/three.dat": b"\x00" * 1000,
        ".hidden": b"skip me",
        "_SUCCESS": b"{}",
        "deep/_temporary/part-00000.csv": b"uncommitted",
    }
    for name, data in contents.items():
        p = tmp_path / "files" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    table = riera.read_files(tmp_path / "files", partition_bytes=100).to_arrow()
    assert table.column_names == ["path", "size", "bytes"]
    got = {r["path"]: (r["size"], r["bytes"]) for r in table.to_pylist()}
    visible = ["one.bin", "two.txt", "empty", "deep/three.dat"]
    assert got == {str(tmp_path / "files" / n): (len(contents[n]), contents[n]) for n in visible}
    assert _last_run().stages[0].num_tasks > 1


def test_read_parquet_splits_by_row_groups(tmp_path: Path) -> None:
    n = 1000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"n{i}" for i in range(n)]),
            "x": pa.array([i * 0.5 for i in range(n)]),
        }
    )
    path = tmp_path / "pq" / "data.parquet"
    path.parent.mkdir()
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    pq.write_table(table.slice(0, 0), tmp_path / "pq" / "empty.parquet")

    out = riera.read_parquet(tmp_path / "pq", partition_bytes=64).to_arrow()
    assert sorted(out.column("id").to_pylist()) == list(range(n))
    assert sorted(out.to_pylist(), key=lambda r: r["id"]) == table.to_pylist()
    assert _last_run().stages[0].num_tasks >= 10  # one split per row group

    whole = riera.read_parquet(path).to_arrow()
    assert whole.num_rows == n
    assert _last_run().stages[0].num_tasks == 1

    some = riera.read_parquet(path, columns=["x", "id"], partition_bytes=64).to_arrow()
    assert some.column_names == ["x", "id"]
    assert sorted(some.column("id").to_pylist()) == list(range(n))


# -- round trips through the sinks -----------------------------------------------------------------

ROUND_TRIP = pa.table(
    {
        "id": pa.array(range(57), pa.int64()),
        "name": pa.array([f'name {i}, with comma and "quotes" ü' for i in range(57)]),
        "score": pa.array([i * 1.25 for i in range(57)]),
    }
)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_write_then_read_round_trips(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out-{fmt}"
    ds = riera.from_arrow(ROUND_TRIP, partitions=3)
    manifest = getattr(ds, f"write_{fmt}")(out)
    assert manifest["rows"] == ROUND_TRIP.num_rows
    assert json.loads((out / "_SUCCESS").read_text())["rows"] == ROUND_TRIP.num_rows
    reader = {"csv": riera.read_csv, "parquet": riera.read_parquet, "json": riera.read_json}[fmt]
    back = reader(out, partition_bytes=128).to_arrow()
    assert sorted(back.to_pylist(), key=lambda r: r["id"]) == ROUND_TRIP.to_pylist()


def test_write_text_then_read_text_round_trips(tmp_path: Path) -> None:
    lines = [f"line {i} ü €" for i in range(40)] + ["", "last"]
    out = tmp_path / "out-text"
    riera.from_items([{"line": s} for s in lines], partitions=3).write_text(out)
    back = riera.read_text(out, partition_bytes=32).to_arrow().column("text").to_pylist()
    assert Counter(back) == Counter(lines)


# -- hidden files -----------------------------------------------------------------------------------


def _output_with_litter(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    riera.range(20, partitions=2).write_csv(out)
    _write(out / ".hidden.csv", "id\n777\n")
    _write(out / "_ignored.csv", "id\n888\n")
    _write(out / "_temporary" / "20260101T000000abcd" / "part-00000.csv", "id\n999\n")
    _write(out / ".git" / "objects.csv", "id\n666\n")
    return out


def test_hidden_files_and_success_marker_are_skipped(tmp_path: Path) -> None:
    out = _output_with_litter(tmp_path)
    assert (out / "_SUCCESS").exists()
    assert sorted(riera.read_csv(out).to_arrow().column("id").to_pylist()) == list(range(20))
    texts = riera.read_text(out).to_arrow().column("text").to_pylist()
    assert sorted(texts) == sorted(['"id"'] * 2 + [str(i) for i in range(20)])  # 2 part files
    globbed = riera.read_csv(str(out / "*.csv")).to_arrow().column("id").to_pylist()
    assert sorted(globbed) == list(range(20))


def test_glob_does_not_descend_into_temporary(tmp_path: Path) -> None:
    out = _output_with_litter(tmp_path)
    ids = riera.read_csv(str(out / "*")).to_arrow().column("id").to_pylist()
    assert sorted(ids) == list(range(20))
