# Every install step lives here: a fresh clone needs only python3 (>= 3.11) and make.
# Installs come from uv.lock (exact versions and hashes, runtime and dev): `make install`
# installs exactly that into .venv/ and refuses when pyproject.toml and the lock disagree.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv itself, pinned by hash in .ci/uv-requirements.txt, lives in .tools/ (not in the project's venv).
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
# uv never downloads a Python of its own: it uses $(PYTHON), as the README promises.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install demo test lint bench bench-db bench-ch clean postgres chromium lock test-latest versions

$(UV): .ci/uv-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r .ci/uv-requirements.txt
	touch $(UV)

$(STAMP): $(UV) pyproject.toml uv.lock
	@$(UV) lock --check --quiet --python $(PYTHON) 2>/dev/null || { \
		echo "uv.lock does not match pyproject.toml (a dependency or bound changed without a new lock)."; \
		echo "Fix: run 'make lock' (re-resolves the lock within pyproject's bounds), then 'make test' and commit uv.lock."; \
		exit 2; }
	$(UV) sync --locked --extra dev --python $(PYTHON) --quiet
	touch $(STAMP)

install: $(STAMP)

# What is installed, one name==version a line (CI prints it first).
versions: $(STAMP)
	@$(UV) pip freeze --python $(BIN)/python

# Re-resolve uv.lock to the newest versions pyproject.toml's bounds allow. Then: make test, commit uv.lock.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite against the newest versions in a throwaway environment; uv.lock and .venv stay untouched.
# BOUNDS=off also lifts pyproject's upper bounds, to see what the next major versions would break.
BOUNDS ?= on
test-latest: $(UV) postgres chromium
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(UV) venv --quiet --python $(PYTHON) "$$tmp/venv" || exit 1; \
	if [ "$(BOUNDS)" = off ]; then $(PYTHON) .ci/bare_requirements.py > "$$tmp/overrides.txt" || exit 1; \
		override="--override $$tmp/overrides.txt"; fi; \
	$(UV) pip install --quiet --python "$$tmp/venv/bin/python" --upgrade $$override -e '.[dev]' || exit 1; \
	$(UV) pip freeze --quiet --python "$$tmp/venv/bin/python" | grep -v '^-e' | sort > "$$tmp/newest.txt"; \
	$(UV) export --frozen --quiet --no-hashes --no-emit-project --no-header --no-annotate --extra dev \
		| sed 's/ *;.*//' | sort > "$$tmp/locked.txt"; \
	echo "newest versions (BOUNDS=$(BOUNDS)):"; tr '\n' ' ' < "$$tmp/newest.txt"; echo; \
	newer=$$(comm -13 "$$tmp/locked.txt" "$$tmp/newest.txt" | tr '\n' ' '); \
	if [ -n "$$newer" ]; then echo "not in uv.lock: $$newer"; else echo "(every one as in uv.lock)"; fi; \
	"$$tmp/venv/bin/python" -m pytest -n 2 -p no:cacheprovider

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

# The HTML report's tests open the pages in a headless Chromium (Debian's package, driven by
# playwright's Python package, which downloads no browser): install it when missing and we may.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium not found; the HTML report's browser tests will be skipped"; fi

test: $(STAMP) postgres chromium
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check backfill tests bench
	$(BIN)/ruff format --check backfill tests bench

# The full benchmark takes a while (20M-row inputs are generated once, then cached in bench/out/).
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick" or BENCH_ARGS="--sizes 1m --only dry,send".
# The database sink's benchmark (bench/database.py) runs after it: a throwaway PostgreSQL,
# 3M generated events with countries and revenue (1M for the memory comparison), and a plain COPY.
# Then bench/clickhouse.py: the ClickHouse sink into the real engine (chdb behind tests/chdb_server.py)
# with Umami's full ClickHouse schema, against a plain insert of the same rows and the PostgreSQL sink.
BENCH_ARGS ?=
BENCH_DB_ARGS ?=
BENCH_CH_ARGS ?=
bench: $(STAMP) postgres
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/database.py $(BENCH_DB_ARGS)
	$(BIN)/python bench/clickhouse.py $(BENCH_CH_ARGS)

bench-db: $(STAMP) postgres
	$(BIN)/python bench/database.py $(BENCH_DB_ARGS)

bench-ch: $(STAMP) postgres
	$(BIN)/python bench/clickhouse.py $(BENCH_CH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache .html-reports
