"""Smoke tests of ``riera bench exchange`` (document 002's exchange study) and its helpers.

The study runs once, in a subprocess, as a user would run it (``--quick``, the three local
backends). Only the report's shape is checked — sections, tables, numeric cells, the document's
figures beside ours — never a timing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from markdown_report import RANGE, run_cli, table
from markdown_report import sections as split_sections
from riera_bench import doc002, exchange_study
from riera_bench.core import BenchmarkError

NUMBER = re.compile(r"^[+-]?[\d,]*\.?\d+×?$")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
BACKENDS = ["shm", "shm-pickle", "disk"]


def number(cell: str) -> float:
    assert NUMBER.match(cell), f"not a number: {cell!r}"
    return float(cell.replace(",", "").rstrip("×"))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``--quick`` run of the study (with plots when matplotlib is installed)."""
    tmp = tmp_path_factory.mktemp("exchange")
    data, out, plots = tmp / "data", tmp / "report.md", tmp / "plots"
    args = ["bench", "exchange", "--quick", "--backends", ",".join(BACKENDS)]
    args += ["--dir", str(data), "--out", str(out)]
    if HAS_MATPLOTLIB:
        args += ["--plots", str(plots)]
    code, stdout, stderr, pid = run_cli(*args, cwd=tmp)
    return {"code": code, "stdout": stdout, "stderr": stderr, "pid": pid, "out": out,
            "data": data, "plots": plots}  # fmt: skip


@pytest.mark.slow
def test_quick_report_sections_and_numbers(quick: dict[str, Any]) -> None:
    assert quick["code"] == 0, quick["stderr"]
    report = quick["stdout"]
    assert quick["out"].read_text(encoding="utf-8") == report
    assert "bench:" in quick["stderr"] and "bench:" not in report  # progress on stderr only
    assert report.startswith("# Riera exchange study (document 002)\n")
    assert "quick (smoke-test sizes" in report
    secs = split_sections(report, "##")
    expected = ["Sizes", "Memory while writing", "Memory while reading", "Times", "Ratios"]
    assert list(secs) == expected + (["Plots"] if HAS_MATPLOTLIB else [])

    variants = {"terasort": {"object", "string", "str", "arrow"}, "brain": {"numpy", "arrow"}}
    sizes = split_sections(secs["Sizes"], "###")
    assert list(sizes) == ["terasort", "brain"]
    for dataset, text in sizes.items():
        rows = table(text)
        ours = [r for r in rows if r["source"] == "ours"]
        assert {(r["size (MB)"], r["variant"]) for r in ours} == {
            (s, v) for s in ("5", "10") for v in variants[dataset]
        }
        for r in ours:
            csv = number(r["CSV (B)"])
            assert 0.9e6 * number(r["size (MB)"]) < csv <= 1e6 * number(r["size (MB)"])
            assert number(r["record batch (B)"]) > 0 and number(r["rows"]) > 0
            for b in BACKENDS:  # every stored object is at least the record batch's data
                assert number(r[f"stored: {b} (B)"]) >= number(r["record batch (B)"])
        doc = [r for r in rows if r["source"].startswith("**doc 002**")]
        assert doc and all(r["size (MB)"] == str(doc002.SIZE_MB[dataset]) for r in doc)
    assert "1,010,869,371" in sizes["terasort"] and "527,266,864 (T3)" in sizes["terasort"]
    assert "94,570,048" in sizes["brain"] and "94,575,068 (T6)" in sizes["brain"]

    for title, steps in (("Memory while writing", {"serialize", "write"}),
                         ("Memory while reading", {"open", "scan", "decode"})):  # fmt: skip
        parts = split_sections(secs[title], "###")
        assert [t.split(",")[0] for t in parts] == ["terasort", "brain"]
        for text in parts.values():
            rows = table(text)
            assert {r["step"] for r in rows} == steps
            assert {r["backend"] for r in rows} == set(BACKENDS)
            for r in rows:
                for col in ("Δ RSS (MiB)", "Δ USS (MiB)", "peak Δ (MiB)", "copies"):
                    number(r[col])
    assert "T9 `write_batch (into shm)` +502.7" in secs["Memory while writing"]
    assert "T17 `to_pandas(types_mapper=pd.ArrowDtype)` +0.0" in secs["Memory while reading"]

    times = split_sections(secs["Times"], "###")
    assert list(times) == ["terasort", "brain"]
    for text in times.values():
        rows = table(text)
        assert len(rows) == len({(r["size (MB)"], r["variant"], r["backend"]) for r in rows})
        for r in rows:
            for col in ("serialize", "write", "open (ms)", "first scan", "decode", "read"):
                assert number(r[col]) >= 0, r
            assert RANGE.match(r["min–max"]), r

    ratios = table(secs["Ratios"])
    assert [r["doc 002 (× faster)"] for r in ratios] == ["2.40×", "3.71×", "20.32×", "12.09×",
                                                          "130.08×"]  # fmt: skip
    assert number(ratios[3]["ours"]) > 0 and number(ratios[0]["ours"]) > 0  # shm vs shm-pickle
    assert "S3" in ratios[4]["figure"] and ratios[4]["ours"] == "–"  # no S3 backend here

    # Everything the study made is gone: CSVs, segments in /dev/shm.
    assert not any(quick["data"].iterdir())
    shm = Path("/dev/shm")
    if shm.is_dir():
        assert sorted(shm.glob(f"riera-{quick['pid']}-*")) == []


@pytest.mark.slow
def test_quick_plots(quick: dict[str, Any]) -> None:
    if not HAS_MATPLOTLIB:
        pytest.skip(
            "matplotlib is not installed (pip install 'riera-bench[plots]'): no plots to check"
        )
    assert quick["code"] == 0, quick["stderr"]
    for dataset in ("terasort", "brain"):
        path = quick["plots"] / f"exchange-{dataset}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"`{path}`" in quick["stdout"]


@pytest.mark.slow
def test_quick_s3_clients_through_a_local_server(tmp_path: Path, s3_server: str) -> None:
    """Both S3 clients in the study, against the session's S3 server."""
    labels = ["s3-parquet", "s3fs-parquet"]
    code, stdout, stderr, _ = run_cli(
        "bench", "exchange", "--quick", "--datasets", "brain", "--variants", "arrow",
        "--backends", ",".join(["shm", *labels]), "--dir", str(tmp_path),
        "--s3-endpoint", s3_server, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"S3 endpoint {s3_server}" in stdout
    sizes = table(split_sections(split_sections(stdout, "##")["Sizes"], "###")["brain"])
    ours = [row for row in sizes if "doc 002" not in row["source"]]
    assert ours
    for row in ours:  # Parquet+snappy objects, the same bytes whichever client wrote them
        assert number(row["stored: s3-parquet (B)"]) == number(row["stored: s3fs-parquet (B)"])
        assert number(row["stored: s3fs-parquet (B)"]) > 0
    assert list(tmp_path.iterdir()) == []  # the study's data directory is gone


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    code, stdout, stderr, _ = run_cli(
        "bench", "exchange", "--quick", "--backends", "shm,tape", cwd=tmp_path, timeout=60
    )
    assert code == 1 and stdout == ""
    assert "tape" in stderr and "available" in stderr


# -- helpers (fast) ---------------------------------------------------------------------------------


def test_csv_generators_are_deterministic_and_shaped(tmp_path: Path) -> None:
    import pandas as pd

    for name, write in (("t", exchange_study.write_terasort_csv),
                        ("b", exchange_study.write_brain_csv)):  # fmt: skip
        a, b = tmp_path / f"{name}1.csv", tmp_path / f"{name}2.csv"
        rows = write(a, 200_000, 7)
        assert write(b, 200_000, 7) == rows and a.read_bytes() == b.read_bytes()
        assert 190_000 < a.stat().st_size <= 200_000 and a.read_bytes().count(b"\n") == rows
    terasort = exchange_study.load_csv(str(tmp_path / "t1.csv"), "terasort", "object")
    assert set(terasort["0"].str.len()) == {10} and set(terasort["1"].str.len()) == {90}
    assert terasort["1"].iloc[3].strip().startswith("0" * 31 + "3")
    brain = exchange_study.load_csv(str(tmp_path / "b1.csv"), "brain", "numpy")
    assert [str(t) for t in brain.dtypes] == ["int32", "float64", "float64"]
    arrow = exchange_study.load_csv(str(tmp_path / "b1.csv"), "brain", "arrow")
    assert all(isinstance(t, pd.ArrowDtype) for t in arrow.dtypes)


@pytest.mark.parametrize(
    ("dataset", "variant"),
    [(d, v) for d in ("terasort", "brain") for v in exchange_study.VARIANTS[d]],
)
def test_decode_gives_back_the_variant(tmp_path: Path, dataset: str, variant: str) -> None:
    import pyarrow as pa

    path = tmp_path / "data.csv"
    make = (
        exchange_study.write_terasort_csv
        if dataset == "terasort"
        else exchange_study.write_brain_csv
    )
    make(path, 50_000, 1)
    df = exchange_study.load_csv(str(path), dataset, variant)
    back = exchange_study.VARIANTS[dataset][variant].decode(pa.Table.from_pandas(df))
    assert [repr(t) for t in back.dtypes] == [repr(t) for t in df.dtypes]
    assert back.equals(df)


def test_a_wrong_read_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's rows, dtypes and value hash must equal the writer's, else no timing."""
    written = {"rows": 10, "dtypes": ["0:dtype('int32')"], "digest": "aa", "ref": None,
               "warm_ref": None, "steps": {}}  # fmt: skip
    read = {**written, "digest": "bb"}
    answers = iter([written, read])
    monkeypatch.setattr(exchange_study, "_call", lambda *_a, **_k: next(answers))

    class Parent:
        def release(self, refs: object) -> None:
            pass

    job = exchange_study.Job("brain", "numpy", "x.csv", exchange_study.backend_spec("shm"), {},
                             exchange_study.SegmentKey(1, "r", "s", 0))  # fmt: skip
    config = exchange_study.ExchangeConfig()
    with pytest.raises(BenchmarkError, match="differs from what was written: value hash bb"):
        exchange_study._measure(None, job, 0, 5, "brain 5 MB", {"shm": Parent()}, config)


def test_document_figures_are_consistent() -> None:
    """Cross-checks of the transcription: the relations the document's own numbers obey."""
    for (dataset, variant), sizes in doc002.SIZES.items():
        if dataset == "brain" or variant == "arrow":  # frame = record batch + a RangeIndex
            assert sizes.dataframe - sizes.record_batch == 128
        assert sizes.stored["shm"][1] - sizes.record_batch < 2_000  # IPC framing only
    assert doc002.SIZES[("brain", "numpy")].record_batch == 20 * doc002.BRAIN_ROWS_150MB
    for mem in doc002.MEMORY.values():
        assert 9 <= mem.table <= 24
    assert sorted({t.table for t in doc002.MEMORY.values()}) == list(range(9, 25))
    assert list(doc002.READ_SHM_ARROW_S) == list(doc002.TERASORT_SIZES_MB)
