# Two commands: `make lab` (set up, open the notebooks) and `make test` (set up, run every test:
# unit tests, the notebooks under nbval, and the JupyterLab browser test when Chromium is installed).
# Notebook sources (see notebooks/README.md): `make sync` brings each notebooks/0N_*.ipynb and its paired
# notebooks/0N_*.py up to date with whichever was edited last (jupytext), without running anything;
# `make notebook NB=01` (one) or `make notebooks` (all four) re-executes and saves them with outputs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := $(abspath $(if $(CAS_EDU_DATA),$(CAS_EDU_DATA),$(wildcard ../shared/data)))

.PHONY: setup lab test benchmarks clean sync notebook notebooks static links student site

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,lab]"
	touch $(STAMP)

setup: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

test: $(STAMP)
	CAS_EDU_DATA=$(DATA) CAS_EDU_PROFILE=cpu $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -q

# jupytext --sync takes the cells from the newer file of each pair (outputs stay in the .ipynb); nbconvert without
# --execute then only trims the .ipynb metadata to the portable kernelspec + language name (JupyterLab saves more).
sync: $(STAMP)
	$(BIN)/jupytext --sync notebooks/0*.ipynb
	$(BIN)/jupyter nbconvert --config nbconvert_execute.py --to notebook --inplace --log-level=WARN notebooks/0*.ipynb

# Re-execute in a fresh kernel whose working directory is notebooks/ (runs land in notebooks/runs/), with the default
# cpu profile only: the committed outputs are the ones nbval checks under CAS_EDU_PROFILE=cpu.
NB_FILES = $(wildcard notebooks/$(NB)*.ipynb)
notebook: $(STAMP)
	@test -n "$(NB)" -a -n "$(NB_FILES)" || { echo "usage: make notebook NB=01 (one of: $(notdir $(wildcard notebooks/0*.ipynb)))" >&2; exit 2; }
	@case "$${CAS_EDU_PROFILE:-cpu}" in cpu) ;; *) echo "make notebook: the committed notebooks are executed with the default cpu profile; unset CAS_EDU_PROFILE (it is '$$CAS_EDU_PROFILE')" >&2; exit 2;; esac
	$(BIN)/jupytext --sync $(NB_FILES)
	CAS_EDU_PROFILE=cpu $(BIN)/jupyter nbconvert --config nbconvert_execute.py --to notebook --execute --inplace $(NB_FILES)
	$(BIN)/python -m pytest tests/test_notebook_sources.py -q

notebooks:
	$(MAKE) notebook NB=0

# Add a PNG next to every plotly figure of the committed notebooks (tools/static_figures.py; needs kaleido and
# Chromium), WITHOUT executing them: only that preprocessor and the metadata trimming of nbconvert_execute.py run.
static: $(STAMP)
	$(BIN)/jupyter nbconvert --config nbconvert_execute.py --to notebook --inplace --log-level=WARN \
		--NotebookExporter.preprocessors=tools.static_figures.StaticFiguresPreprocessor notebooks/0*.ipynb
	@ls -l notebooks/0*.ipynb | awk '{ printf "%8.0f kB  %s\n", $$5 / 1000, $$NF }'

# Rewrite the Binder/Colab badges (README.md, a `launch` cell per notebook) and each notebook's Colab set-up cell
# (tag `setup`) from [tool.cas_edu] in pyproject.toml, then update the changed .ipynb from their .py (jupytext
# --update: inputs only, outputs kept, nothing executed). Idempotent; `--check` lists what is out of date.
links: $(STAMP)
	$(BIN)/python -m tools.launch_links

# The student edition (notebooks/student/0N_*.ipynb, committed; the Binder and Colab badges open it): each
# notebooks/0N_*.ipynb without its solution cells and with its exercise cells' outputs cleared (tools/student_edition.py).
# Nothing runs. Rebuild after every change to a notebook: tests/test_editions.py fails until the two agree.
student: $(STAMP)
	$(BIN)/python -m tools.student_edition

# The course site (site/, git-ignored; open site/index.html): the committed student notebooks as HTML pages with an
# index and previous/next links, figures from their saved images, MathJax copied into site/mathjax/ (no CDN, no
# network). Nothing is re-executed (tools/course_site.py).
site: $(STAMP)
	$(BIN)/python -m tools.course_site

clean:
	rm -rf $(VENV) runs .pytest_cache
