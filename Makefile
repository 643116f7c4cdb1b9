# Two commands: `make lab` (set up, open the notebooks) and `make test` (set up, run every test:
# unit tests, the notebooks under nbval, and the JupyterLab browser test when Chromium is installed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := $(abspath $(if $(CAS_EDU_DATA),$(CAS_EDU_DATA),$(wildcard ../shared/data)))

.PHONY: setup lab test benchmarks clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	CAS_EDU_DATA=$(DATA) CAS_EDU_PROFILE=cpu $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -q

clean:
	rm -rf $(VENV) runs .pytest_cache
