# The two commands of the README:
#   make book   sets up .venv and builds the whole book, executing every notebook
#   make test   sets up .venv and runs the whole test suite, notebooks included
# Data: point DCL_DATA_MIRROR at a folder with the original archives (see README).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test book clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	DCL_PROGRESS=0 $(BIN)/python -m pytest tests --nbval-lax notebooks -p no:cacheprovider --durations=40

book: $(STAMP)
	rm -rf _build
	DCL_PROGRESS=0 $(BIN)/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build .pytest_cache
