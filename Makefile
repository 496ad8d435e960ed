# eventmail: the two commands a new user needs are `make test` and `make run`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRIALS ?= 20
KILL_TRIALS ?= 200
RUN_DIR ?= run-data
# Extra localserve flags, e.g. RUN_ARGS='--password pw --smtp-port 2525'.
RUN_ARGS ?=

.PHONY: test run demo proto proto-check lint typecheck chaos bench deps venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use (installed only when run as root and missing).
deps:
	@tools/install-debian-packages

test: venv deps
	$(BIN)/ruff check eventmail replica tests bench tools chaos
	$(BIN)/mypy eventmail replica
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 -q

# The local mail server: you@localhost on loopback (ports printed at start).
run: venv
	$(BIN)/eventmail localserve --dir $(RUN_DIR) $(RUN_ARGS)

# A walk through the CLI on a throwaway data directory.
demo: venv
	$(BIN)/python tools/demo.py --dir demo-data

proto: venv
	$(BIN)/python tools/gen_proto.py eventmail/proto

# Fault injection with more trials than `make test` runs: the store's SIGKILL trials
# (KILL_TRIALS) and every replication scenario in both modes (TRIALS each).
chaos: venv
	EVENTMAIL_KILL_TRIALS=$(KILL_TRIALS) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_crash.py
	GRPC_VERBOSITY=ERROR $(BIN)/python -m chaos.run --trials $(TRIALS)

bench: venv deps
	$(BIN)/python bench/store.py
	$(BIN)/python bench/smtp.py
	$(BIN)/python bench/imap.py
	$(BIN)/python bench/imapstress.py
	$(BIN)/python bench/outbound.py
	$(BIN)/python -c "import sklearn" 2>/dev/null || $(BIN)/pip install -q scikit-learn
	$(BIN)/python bench/junk.py $(if $(CORPUS),--corpus $(CORPUS))

clean:
	rm -rf $(VENV) $(RUN_DIR)
