# Two commands do everything on a fresh machine:
#   make run   - create .venv, install, seed the embedded warehouse, run ecat_daily for 3 days
#   make test  - create .venv, install, run the test suite, then the Celery/PostgreSQL/Redis
#                integration (installs postgresql and redis from Debian packages when missing)
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-celery bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

run: $(STAMP)
	scripts/run_demo.sh

test: $(STAMP)
	scripts/run_tests.sh
	scripts/celery_integration.sh

test-celery: $(STAMP)
	scripts/celery_integration.sh

clean:
	rm -rf .ecat_home .airflow
