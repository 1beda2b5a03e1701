"""Riera's benchmarks and studies, run as ``riera bench …`` (a distribution of its own).

- :mod:`riera_bench.core`: the core benchmark (TeraSort, word count, exchange, overhead, startup).
- :mod:`riera_bench.exchange_study`, :mod:`riera_bench.doc002`: document 002's exchange study.
- :mod:`riera_bench.mapreduce`, :mod:`riera_bench.peers`: TeraSort on Riera and on its peers.
- :mod:`riera_bench.provenance`: what provenance capture costs; :mod:`riera_bench.raw`: DuckDB
  over raw files against loading them into SQLite.
- :mod:`riera_bench.measure`: the shared measuring helpers; :mod:`riera_bench.cli`: the commands.

The benchmarks measure Riera's internals (exchange backends, stores) as well as its public API,
so they follow the ``riera`` of the same clone; the library never imports this package.
"""
