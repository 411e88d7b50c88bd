# make setup: a local virtual environment with everything the book and the tests need (CPU is enough).
# make test: unit tests, the notebooks under nbval, a CPU smoke sweep, and the book build with warnings as errors.
# make book: build the HTML book into _build/html from the committed results.
# make browser: open every built page in headless Chromium (tests/test_browser.py; needs `make book`).
PY ?= .venv/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup test unit notebooks book browser clean

.venv/.done: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[experiment,offline,book,test]'
	touch $@

setup: .venv/.done

unit: setup
	$(PY) -m pytest -q tests --ignore=tests/test_browser.py

notebooks: setup
	$(PY) -m pytest -q --nbval-lax chapters -p no:cacheprovider

book: setup
	.venv/bin/jupyter-book build . -W -n --keep-going

browser: setup
	$(PY) -m pytest -q tests/test_browser.py -p no:cacheprovider

test: unit notebooks book
	$(PY) -m pytest -q tests/book_built.py tests/test_browser.py -p no:cacheprovider

clean:
	rm -rf _build
