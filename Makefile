# Every install step lives here: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check backfill tests bench
	$(BIN)/ruff format --check backfill tests bench

# The full benchmark takes a while (20M-row inputs are generated once, then cached in bench/out/).
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick" or BENCH_ARGS="--sizes 1m --only dry,send".
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache
