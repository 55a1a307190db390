# Every install step lives here: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-db clean postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the shipped sample: a dry run unless UMAMI_HOST (and UMAMI_WEBSITE_ID) are set.
# The sample holds bad rows on purpose, so exit status 1 (rows rejected) is the expected outcome.
demo: $(STAMP)
	@$(BIN)/backfill import sample_data/events.csv --mapping mappings/sample_events.yaml \
		--rejects .demo/rejects.ndjson --out .demo/payloads.ndjson --report .demo/report.json; \
	status=$$?; \
	if [ $$status -eq 1 ]; then echo "(exit 1: the sample's bad rows were rejected on purpose; see .demo/rejects.ndjson)"; fi; \
	[ $$status -le 1 ]

# The database sink's tests start a throwaway PostgreSQL server (initdb + pg_ctl, no service):
# install the server binaries when they are missing and we may (root on Debian).
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL server binaries not found; the database sink's tests will be skipped"; fi

test: $(STAMP) postgres
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check backfill tests bench
	$(BIN)/ruff format --check backfill tests bench

# The full benchmark takes a while (20M-row inputs are generated once, then cached in bench/out/).
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick" or BENCH_ARGS="--sizes 1m --only dry,send".
# The database sink's benchmark (bench/database.py) runs after it: a throwaway PostgreSQL,
# 3M generated events with countries and revenue (1M for the memory comparison), and a plain COPY.
BENCH_ARGS ?=
BENCH_DB_ARGS ?=
bench: $(STAMP) postgres
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/database.py $(BENCH_DB_ARGS)

bench-db: $(STAMP) postgres
	$(BIN)/python bench/database.py $(BENCH_DB_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache
