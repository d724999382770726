# The two commands of the README:
#   make book   sets up .venv and builds the whole book, executing every notebook
#   make test   sets up .venv, runs the unit tests, then builds the book: every notebook
#               executes once, and a failing cell, a broken cross-reference, glue key or
#               citation, or a chapter over 180 s fails it (Sphinx warnings are errors)
#   make nbval  the notebooks under nbval, cell by cell (NB=notebooks/03_dcan.ipynb for one)
# Data: point DCL_DATA_MIRROR at a folder with the original archives (see README).  A
# relative path is made absolute here: the notebooks execute with their own folder as the
# working directory, where ../shared/data would name another folder.
ifdef DCL_DATA_MIRROR
export DCL_DATA_MIRROR := $(abspath $(DCL_DATA_MIRROR))
endif

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test unit book nbval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: unit book

unit: $(STAMP)
	DCL_PROGRESS=0 $(BIN)/python -m pytest tests -p no:cacheprovider --durations=30

book: $(STAMP)
	rm -rf _build
	DCL_PROGRESS=0 $(BIN)/jupyter-book build . -W -n --keep-going
	@$(BIN)/python -c "import json; t = json.load(open('_build/exec_times.json')); \
	  print('notebook execution (s):', ', '.join(f'{k.split(\"/\")[-1]} {v[\"runtime_s\"]:.0f}' for k, v in t.items()))"

NB ?= notebooks
nbval: $(STAMP)
	DCL_PROGRESS=0 $(BIN)/python -m pytest --nbval-lax $(NB) -p no:cacheprovider --durations=20

clean:
	rm -rf _build .pytest_cache
