# Reproduce CI locally. `make ci` runs exactly what CI runs (.ci/run).
PY := .venv/bin/python

.PHONY: ci test demo lint typecheck bench venv clean

ci:
	bash .ci/run

venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' -e ./benchmarks

test: venv
	$(PY) -m pytest

demo: venv
	.venv/bin/riera demo

lint: venv
	.venv/bin/ruff check src tests benchmarks examples
	.venv/bin/ruff format --check src tests benchmarks examples

typecheck: venv
	.venv/bin/mypy

bench: venv
	.venv/bin/riera bench core

clean:
	.venv/bin/riera shm sweep 2>/dev/null || true
	rm -rf .venv build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
