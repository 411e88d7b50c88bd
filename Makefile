# make setup: a local virtual environment with everything the book and the tests need (CPU is enough).
# make unit: the fast tier, every test not marked slow (`pytest -m "not slow"`): minutes on two CPU cores.
# make slow: the slow tier, tests marked @pytest.mark.slow: whole training runs, sweeps, subprocesses, notebooks.
# make test: what CI runs (.ci/run): both tiers, the notebooks under nbval, the book build with warnings as
#            errors, then the built HTML checked and opened in headless Chromium.
# make book: build the HTML book into _build/html from the committed results.
# make browser: open every built page in headless Chromium (tests/test_browser.py; needs `make book`).
# make lint: ruff's lint rules and formatting (configured in pyproject.toml) over attnpaper, tests and scripts.
PY ?= .venv/bin/python
TORCH ?= torch==2.13.0
PYTEST = $(PY) -m pytest -q -p no:cacheprovider

.PHONY: setup test unit slow notebooks book browser lint clean readme

.venv/.done: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[experiment,offline,book,test]'
	touch $@

setup: .venv/.done

unit: setup
	$(PYTEST) tests -m "not slow" --ignore=tests/test_browser.py

slow: setup
	$(PYTEST) tests -m slow --ignore=tests/test_browser.py

notebooks: setup
	$(PYTEST) --nbval-lax chapters

# A page's executed outputs are cached by its code (execute_notebooks: cache), not by the results it
# reads or the attnpaper code it calls: when a file under results/ or attnpaper/ is newer than the last
# build, every page is executed again.
book: setup
	@if [ -d _build/html ] && { [ ! -f _build/.results-stamp ] || [ -n "$$(find results attnpaper -type f \
	    -newer _build/.results-stamp -not -path 'results/rehearsal/*' -not -path 'results/local/*' \
	    -not -path 'results/smoke/*' -not -name '*.pyc' -print -quit)" ]; }; then \
	  echo "results/ or attnpaper/ changed since the last build: executing every page again"; \
	  .venv/bin/jupyter-book clean . --all; fi
	.venv/bin/jupyter-book build . -W -n --keep-going
	@touch _build/.results-stamp

browser: setup
	$(PYTEST) tests/test_browser.py

readme: setup
	$(PY) scripts/readme_table.py

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint unit slow notebooks book
	$(PYTEST) tests/book_built.py tests/test_browser.py

clean:
	rm -rf _build
