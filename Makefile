# make run: the whole system on this machine; make test: the test suite. Python: PYTHON=python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test lint format chaos

run: $(VENV)/.installed-runtime
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py orchestrate

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

# make chaos: bench/chaos.py at full size, then 30 s outages of Redis (and of PostgreSQL when
# DATABASE_URL names one); see docs/reliability.md. CHAOS_ARGS=... changes the chaos run.
CHAOS_ARGS ?= --tasks 5000 --workers 4 --duration 900 --kills 30 --redis-restarts 3 --web-restarts 3 --reconcile-every 10

chaos: $(VENV)/.installed-test
	$(PY) bench/chaos.py $(CHAOS_ARGS)
	$(PY) bench/outages.py redis --outage 30
	case "$$DATABASE_URL" in postgres*) $(PY) bench/outages.py database --outage 30 ;; esac

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

format: $(VENV)/.installed-test
	$(PY) -m ruff format .

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamp files: pip runs again only when a requirements file changes.
$(VENV)/.installed-runtime: requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-test.txt
	touch $@ $(VENV)/.installed-runtime
