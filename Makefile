# Bukt's two commands are `make run` and `make test`; the rest serve development.
# Everything runs from a private virtual environment (.venv) that is created on
# first use, so a fresh clone needs nothing but python3, gcc and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
DEPS   := $(VENV)/.deps-installed
CORE_SRC := $(wildcard cext/*.pyx cext/*.pxi cext/*.pxd cext/includes/*)
CORE   := $(VENV)/.core-built

.PHONY: all run test debug bench lint clean install deps build

all: build

# The environment: build tools, then the package's runtime and test dependencies.
$(DEPS): pyproject.toml setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip "setuptools>=74" "Cython>=3.0.10" wheel
	$(PIP) install -e '.[test]' --no-build-isolation
	touch $@

deps: $(DEPS)

# Compile the Cython core in place (bukt/_core*.so). CFLAGS carries the debug flag.
$(CORE): $(DEPS) $(CORE_SRC)
	CFLAGS="$(CORE_CFLAGS)" $(PIP) install -e . --no-build-isolation --no-deps
	$(PY) -c "import bukt._core as c; print('core:', c.__file__, 'debug' if c.DEBUG else 'release')"
	echo "$(CORE_CFLAGS)" > $@

build: $(CORE)

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

# The same suite against a core built with BUKT_DEBUG, which checks invariants
# inside the table at run time (see cext/includes/debug.h).
debug:
	rm -f $(CORE)
	$(MAKE) test CORE_CFLAGS=-DBUKT_DEBUG=1
	rm -f $(CORE)

run: build
	$(VENV)/bin/bukt serve $(if $(CONFIG),--config $(CONFIG))

bench: build
	$(PIP) install -e '.[bench]' --no-build-isolation --no-deps
	$(PIP) install lmdb redis
	$(PY) bench/local.py

lint: $(DEPS)
	$(PY) -m cython -a cext/core.pyx -o build/core.c && echo "annotation: build/core.html"

clean:
	rm -rf build dist *.egg-info bukt/*.so bukt/*.c cext/*.c cext/*.html var .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
