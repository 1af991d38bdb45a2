# AlloNantes voicebot — every set-up step lives here, so that a fresh clone needs only
# `make run` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
UV          := $(VENV)/bin/uv
UV_VERSION  := 0.13.9
STAMP       := $(VENV)/.installed
STANDINS    := models/standins/.ready
DEBIAN_PKGS := espeak-ng sox asterisk-core-sounds-fr asterisk-core-sounds-fr-wav portaudio19-dev libasound2 chromium postgresql openssl systemd

# Quiet, private, offline defaults for every command started from here.
export RASA_TELEMETRY_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export PYTHONWARNINGS := ignore::DeprecationWarning
export UV_PYTHON_DOWNLOADS := never
export HF_HUB_OFFLINE := 1

.PHONY: help setup system-deps caller-key standins train lint test run chat serve bench clean mutation

help:
	@echo "make run    - set up everything needed and start the bot"
	@echo "make test   - set up everything needed and run the test suite"
	@echo "make setup  - only set up (.venv, Debian packages, stand-in models, caller hash key)"
	@echo "make train  - train the Rasa model (nlu/)"
	@echo "make lint   - ruff + mypy + import-linter (the layers in .importlinter)"
	@echo "make mutation - mutation-test the protocol decoders (minutes; not part of make test)"

setup: system-deps $(STAMP) $(STANDINS) caller-key

system-deps:
	@scripts/system-deps.sh $(DEBIAN_PKGS)

# The key that hashes callers' numbers in the call records: created once, outside the
# repository (${XDG_CONFIG_HOME:-~/.config}/allonantes-voicebot/caller-hash.key, mode 0600),
# never replaced. `voicebot serve` and `run` refuse to start without a key.
caller-key:
	@scripts/caller-hash-key.sh

$(STAMP): requirements.lock pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  py310=$$(scripts/find-python310.sh); \
	  echo "Creating $(VENV) with $$py310"; \
	  "$$py310" -m venv $(VENV); \
	fi; \
	$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"; \
	$(UV) pip sync -q --python $(PY) --compile-bytecode requirements.lock; \
	$(UV) pip install -q --python $(PY) --no-deps --compile-bytecode -e .; \
	touch $(STAMP)

$(STANDINS): $(STAMP) voicebot/speech/standins.py
	$(PY) -m voicebot.speech.standins
	@touch $(STANDINS)

train: setup
	$(VENV)/bin/voicebot train

lint: setup
	$(VENV)/bin/ruff check voicebot telephony tests nlu scripts
	$(VENV)/bin/ruff format --check voicebot telephony tests nlu scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: setup lint
	$(VENV)/bin/voicebot train --if-needed
	$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# Mutation testing of the decoders that read bytes from outside (issue 15), not part of
# `make test`: mutmut mutates a copy in mutants/ ([tool.mutmut] in pyproject.toml) and runs
# only the mutants of the decoding functions (scripts/mutation_score.py's DECODERS: the two
# codecs whole; AMI replies, console and softphone messages, the settings and knowledge-base
# loaders), each against the decoders' tests that reach it. scripts/mutation_score.py then
# prints killed/total per decoder, with and without the mutants that only reword an
# exception's message, and fails if a decoder scores under MUTATION_MIN % (wording aside).
# Always a fresh run: cached results would hide a change in the tests or the code.
# (mutants/models/ first: mutmut copies models/manifest.yml only into an existing folder.)
MUTATION_MIN := 90

mutation: setup
	rm -rf mutants
	mkdir -p mutants/models
	$(PY) scripts/mutation_score.py --patterns | xargs nice -n 10 $(VENV)/bin/mutmut run
	$(PY) scripts/mutation_score.py --fail-under $(MUTATION_MIN) --show-survivors

run: setup
	$(VENV)/bin/voicebot train --if-needed
	$(VENV)/bin/voicebot run

chat: setup
	$(VENV)/bin/voicebot train --if-needed
	$(VENV)/bin/voicebot chat

clean:
	rm -rf $(VENV) .rasa nlu/models .pytest_cache .mypy_cache .ruff_cache
