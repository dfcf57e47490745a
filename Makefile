# The README's two commands: `make run` and `make test`. Both build what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CERTS  ?= certs

.PHONY: install test certs protos bench run clean help

help:
	@echo "make run      dev PKI + NATS + mock agents + the poller daemon (Ctrl-C stops all)"
	@echo "make test     the whole test suite"
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

test: $(STAMP)
	$(BIN)/python -m pytest

certs: $(STAMP)
	$(BIN)/serviceradar-poller pki dev $(CERTS)

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

bench: $(STAMP)
	$(BIN)/python -m bench

run: $(STAMP)
	$(BIN)/python -m poller.demo --certs $(CERTS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
