# Everything a newcomer needs is a target here; each one sets up what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick clean screenshots reliability soak deploy-build

# The virtual environment, rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## The main job: build (or reuse) the demo workspace and open it.
demo: $(STAMP)
	$(BIN)/pik demo

## The whole test suite, with lint and type checks first, on every core (pytest-xdist).
test: $(STAMP) lint
	$(BIN)/python -m pytest -n auto

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## The benchmark harness: figures and the machine they ran on.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/aws_calls.py
	$(BIN)/python bench/console.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick
	$(BIN)/python bench/aws_calls.py --lines 300

## The reliability suites again (faults, crashes, concurrency, hostile input, security): docs/reliability.md.
reliability: $(STAMP)
	$(BIN)/python scripts/reliability.py

## The same suites with many more rounds (tens of minutes); rewrites docs/reliability.md with soak figures.
soak: $(STAMP)
	$(BIN)/python scripts/reliability.py --soak

## SVG screenshots of every console pane, made from a fresh demo workspace (screenshots/).
screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

## What `sam deploy --template-file backend/template.yaml` uploads (docs/aws.md): build/lambda/code, the
## backend package alone, and build/lambda/layer, its dependencies for the template's runtime and
## architecture (pip --platform; no container, any local Python 3.11+). No virtual environment needed.
## LAMBDA_BOTO3=runtime leaves boto3 to the Lambda runtime's copy instead of bundling it.
LAMBDA_BOTO3 ?= bundle
deploy-build:
	$(PYTHON) scripts/build_lambda.py --boto3 $(LAMBDA_BOTO3)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build/lambda build/lambda-test .aws-sam
