"""Actions: what makes a :class:`~riera.Dataset` run (collect, count, write…), as a mixin.

Each action builds the plan that ends in it and hands it to the session runtime; nothing before an
action runs. Previews (``take``, ``head``, ``show``) run only as much of a narrow plan as the rows
they need.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riera.errors import PlanError
from riera.physical import planner
from riera.physical import stage as ph
from riera.plan import nodes as n

if TYPE_CHECKING:
    import pandas as pd

PathLike = str | os.PathLike[str]


class Actions:
    """The actions of :class:`~riera.Dataset` (which supplies ``_node``)."""

    __slots__ = ()
    _node: n.Node

    def _run(
        self,
        action: str,
        root: n.Node | None = None,
        final_op: Any = None,
        preview: int | None = None,
    ) -> Any:
        from riera.plan.stream import unbounded
        from riera.runtime import get_runtime

        if unbounded(self._node):
            raise PlanError(
                f"{action}: this Dataset reads a stream, which never ends; start it with "
                f".write_stream(sink, ...) (a function, a URL, or riera.testing.CollectSink())"
            )
        return get_runtime().execute(root or self._node, action, final_op, preview=preview)

    def to_arrow(self) -> pa.Table:
        """Run and return the result as one Arrow table.

        Its buffers are zero-copy views of the run's shared-memory segments: the segments'
        names are already released (``riera shm ls`` does not list them), and the memory is
        freed when the table is."""
        table = self._run("to_arrow").table
        assert table is not None
        return table

    def to_pandas(self, *, arrow_dtypes: bool = False) -> pd.DataFrame:
        """Run and return a pandas DataFrame (pandas' default dtypes).

        ``arrow_dtypes=True`` makes every column ``pd.ArrowDtype`` (zero-copy over the result).
        """
        import pandas as pd

        table = self.to_arrow()
        if arrow_dtypes:
            return table.to_pandas(types_mapper=pd.ArrowDtype)
        return table.to_pandas()

    def collect(self) -> list[dict[str, Any]]:
        """Run and return every row as a dict."""
        return self.to_arrow().to_pylist()

    def take(self, count: int = 20) -> list[dict[str, Any]]:
        """Run and return the first ``count`` rows (as dicts)."""
        return self.head(count).to_pylist()

    def head(self, count: int = 5) -> pa.Table:
        """Run and return the first ``count`` rows as an Arrow table.

        Over a narrow plan (no shuffle before the rows are known) tasks run in waves of one per
        worker, and the run stops as soon as enough rows came: a preview of a large file reads
        a split or two, not the whole input.

        >>> import riera
        >>> riera.range(1_000_000).head(3).column("id").to_pylist()
        [0, 1, 2]
        """
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise PlanError(f"head: count must be a non-negative integer; got {count!r}")
        table = self._run("head", root=n.Limit((self._node,), count), preview=count).table
        assert table is not None
        # min(): a table without columns reports any slice length as its row count.
        return table.slice(0, min(count, table.num_rows))

    def show(self, count: int = 10) -> None:
        """Print the first ``count`` rows as a table (long values are cut, with an ellipsis)."""
        from riera.io.render import render_table

        print(render_table(self.head(count)))

    def count(self) -> int:
        """Run and return the number of rows."""
        out = self._run("count", final_op=ph.Count(f"count({self._node.name})")).table
        assert out is not None
        return int(sum(out.column("count").to_pylist())) if out.num_rows else 0

    def iter_batches(self, batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
        """Run, then yield the result as record batches of at most ``batch_size`` rows.

        The whole result is computed (and held, zero-copy, in shared memory) before the first
        batch is yielded."""
        yield from self.to_arrow().to_batches(max_chunksize=batch_size)

    def _write(
        self, fmt: n.SinkFormat, path: PathLike, mode: str, **options: Any
    ) -> dict[str, Any]:
        if mode not in ("error", "overwrite"):
            raise PlanError(f"write_{fmt}: mode must be 'error' or 'overwrite'; got {mode!r}")
        node = n.Write(
            (self._node,),
            fmt,
            os.fspath(path),
            mode,  # type: ignore[arg-type]
            tuple(sorted((k, v) for k, v in options.items() if v is not None)),
        )
        manifest: dict[str, Any] = self._run(f"write_{fmt}", root=node).manifest
        return manifest

    def write_csv(self, path: PathLike, *, mode: str = "error") -> dict[str, Any]:
        """Write one CSV file per partition into directory ``path``, committed atomically."""
        return self._write("csv", path, mode)

    def write_parquet(
        self, path: PathLike, *, mode: str = "error", compression: str = "snappy"
    ) -> dict[str, Any]:
        """Write one Parquet file per partition into ``path``, committed atomically."""
        return self._write("parquet", path, mode, compression=compression)

    def write_json(self, path: PathLike, *, mode: str = "error") -> dict[str, Any]:
        """Write JSON lines, one file per partition, committed atomically."""
        return self._write("json", path, mode)

    def write_text(
        self, path: PathLike, *, column: str | None = None, mode: str = "error"
    ) -> dict[str, Any]:
        """Write one line per row of a string column (the only column, or ``column``)."""
        return self._write("text", path, mode, column=column)

    def write_binary(
        self, path: PathLike, *, column: str | None = None, mode: str = "error"
    ) -> dict[str, Any]:
        """Write the raw bytes of a binary column, concatenated, one file per partition."""
        return self._write("binary", path, mode, column=column)

    def explain(self, *, show: bool = True) -> str | None:
        """Print the logical plan and the stages it becomes; ``show=False`` returns the text.

        >>> import riera
        >>> print(riera.range(10).filter(lambda r: r["id"] > 4).explain(show=False))
        ... # doctest: +ELLIPSIS
        Logical plan:
        ...
        """
        from riera.config import load_settings
        from riera.runtime import _runtime

        settings = _runtime.settings if _runtime is not None else load_settings()
        text = planner.explain(self._node, settings)
        if not show:
            return text
        print(text)
        return None
