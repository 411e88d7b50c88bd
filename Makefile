# make setup: a local virtual environment with everything the book and the tests need (CPU is enough).
# make test: unit tests, the notebooks under nbval, a CPU smoke sweep, and the book build with warnings as errors.
# make book: build the HTML book into _build/html from the committed results.
PY ?= .venv/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup test unit notebooks book clean

.venv/.done: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[experiment,offline,book,test]'
	touch $@

setup: .venv/.done

unit: setup
	$(PY) -m pytest -q tests

notebooks: setup
	$(PY) -m pytest -q --nbval-lax chapters -p no:cacheprovider

book: setup
	.venv/bin/jupyter-book build . -W -n --keep-going

test: unit notebooks book
	$(PY) -m pytest -q tests/book_built.py

clean:
	rm -rf _build
