# Everything set-up needs is here: a clean clone runs `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYBABEL := $(VENV)/bin/pybabel
LANGS := ka az hy ru en
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Tests run in this many processes (pytest-xdist); each test has its own database.
TEST_WORKERS ?= 2

.PHONY: run test lint format migrate translations extract update-translations chat clean benchmark \
	benchmark-inbound benchmark-export

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## Compile the translators' .po files into .mo (build outputs, not committed).
translations: $(STAMP)
	$(PYBABEL) compile --statistics -d locales -D messages

## Pull every marked string from the code into locales/messages.pot.
extract: $(STAMP)
	$(PYBABEL) extract -F babel.cfg -k _ -k ngettext:1,2 --no-location --sort-output \
		--project=Khma --copyright-holder="Khma contributors" -o locales/messages.pot .

## Merge the template into each language's catalog (new strings arrive untranslated).
update-translations: extract
	$(PYBABEL) update -i locales/messages.pot -d locales -D messages --no-fuzzy-matching \
		--ignore-obsolete

migrate: $(STAMP)
	$(PY) -m bot migrate

## Set up, migrate and start: Telegram when TELEGRAM_TOKEN is set, else a terminal chat.
run: translations migrate
	$(PY) -m bot start

chat: translations migrate
	$(PY) -m bot chat

## Install what tests need, then run the suite on SQLite and PostgreSQL.
test: $(TEST_STAMP) translations
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS)

## Broadcast to 10,000 stand-in residents and print the figures (minutes; not part of CI).
benchmark: $(TEST_STAMP) translations
	$(PY) -m benchmarks.broadcast $(ARGS)

## Residents' messages answered per second: Khma against a bare echo bot (minutes; not CI).
benchmark-inbound: $(TEST_STAMP) translations
	$(PY) -m benchmarks.inbound $(ARGS)

## Exports of 100,000 reports: time and memory per format (minutes; not CI).
benchmark-export: $(TEST_STAMP) translations
	$(PY) -m benchmarks.export $(ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find locales -name '*.mo' -delete
