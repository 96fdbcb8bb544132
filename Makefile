# Two commands on a fresh machine (Python 3.11+ and make are all it needs):
#   make run    the whole pipeline on the embedded defaults (broker, database, services),
#               fed by a simulated sensor array so alerts can be seen arriving
#   make test   lint + the full test suite against a real broker and a real database
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: install run test lint lock bench clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/shotline run --demo

# .ci/system-packages: promtool and amtool for the deploy tests, chromium for the browser
# tests (apt-get, only as root; otherwise those tests skip and say why).
test: install
	.ci/system-packages
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

# Re-pin after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/shotline-lock && /tmp/shotline-lock/bin/pip install --quiet '.[dev]' \
	  && /tmp/shotline-lock/bin/pip freeze --exclude shotline > requirements.lock && rm -rf /tmp/shotline-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
