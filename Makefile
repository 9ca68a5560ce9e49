# The commands a person runs; each is also in README.md.
.PHONY: run test lint bench reliability

run:
	dlr-tracker serve

test:
	python -m pytest

lint:
	ruff check .
	mypy

bench:
	python -m bench.ingest
	python -m bench.query
	python -m bench.sweep

# The fault suite at full size (crash, outage, hostile input, order at scale, a 10-minute soak).
# The same tests run in `make test` and CI in a short form.
reliability:
	DLR_RELIABILITY=full python -m pytest tests/reliability -v -s
