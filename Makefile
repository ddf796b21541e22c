# Two commands matter for users: `make demo` and `make test`. Everything installs itself into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_SOURCES = $(wildcard druid_k8s_provider tests dags bench)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags

.PHONY: venv test lint typecheck pytest demo bench docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q -e '.[test]' -c constraints.txt
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

typecheck: venv
	$(BIN)/mypy --strict druid_k8s_provider

pytest: venv
	$(BIN)/pytest -q -p no:cacheprovider

docs: venv
	$(BIN)/mkdocs build --strict --site-dir $(CURDIR)/.airflow/site

test: lint typecheck docs pytest

demo: venv
	$(BIN)/python -m druid_k8s_provider.testing.demo

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .airflow .demo site
