# Bukt's two commands are `make run` and `make test`; the rest serve development.
# Everything runs from a private virtual environment (.venv) that is created on
# first use, so a fresh clone needs nothing but python3, gcc and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
DEPS   := $(VENV)/.deps-installed
CORE_SRC := $(wildcard cext/*.pyx cext/*.pxi cext/*.pxd cext/includes/* bukt/*.pxd bukt/*.pyx \
                    bukt/tcp/*.pyx bukt/tcp/*.pxd bukt/tcp/*.pxi bukt/writer/*.pyx bukt/writer/*.pxd)
CORE   := $(VENV)/.core-built

.PHONY: all run test test-fast debug bench lint clean install install-venv install-units deps build

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

# The unit tests alone (tests/unit: one process each, no servers, no kills).
test-fast: build
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

# The same suite against a core built with BUKT_DEBUG, which checks invariants
# inside the table at run time (see cext/includes/debug.h).
debug:
	rm -f $(CORE)
	$(MAKE) test CORE_CFLAGS=-DBUKT_DEBUG=1
	rm -f $(CORE)

# The whole service in the foreground with built-in defaults (or CONFIG=path/bukt.yaml):
# HTTP on 127.0.0.1:7070, TCP on 127.0.0.1:7071, data in ./var; it prints where it
# listens and where the admin token is. Ctrl-C stops it cleanly.
run: build
	@$(VENV)/bin/bukt serve $(if $(CONFIG),--config $(CONFIG))

# Installs Bukt as a systemd service (as root): the package into its own virtual
# environment at PREFIX, the unit, sysusers.d and tmpfiles.d files, and
# /etc/bukt/bukt.yaml unless one exists. DESTDIR= stages all of it under DESTDIR (for a
# package or an image): the environment is made there and its paths (script lines,
# pyvenv.cfg, compiled files) are rewritten to name PREFIX, where it will run.
#
# The environment runs on INSTALL_PYTHON, the system's interpreter by default: a venv
# only links to the interpreter that made it, so one made from a build user's private
# Python (pyenv, ~/.local) breaks for the bukt user, who cannot read that home. An
# interpreter under /root or /home is refused unless ALLOW_PRIVATE_PYTHON=1.
INSTALL_PYTHON ?= /usr/bin/python3
PREFIX      ?= /opt/bukt
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(SYSCONFDIR)/systemd/system
SYSUSERSDIR ?= $(SYSCONFDIR)/sysusers.d
TMPFILESDIR ?= $(SYSCONFDIR)/tmpfiles.d

install: install-venv install-units
	@echo "installed; start it with: systemctl enable --now bukt"
	@echo "then: sudo -u bukt BUKT_CONFIG=$(SYSCONFDIR)/bukt/bukt.yaml $(PREFIX)/bin/bukt status"

STAGE := $(DESTDIR)$(PREFIX)

install-venv:
	@base=$$($(INSTALL_PYTHON) -c 'import os, sys; print(os.path.realpath(sys.base_prefix))') || exit 1; \
	case "$$base" in /root/*|/home/*) if [ "$(ALLOW_PRIVATE_PYTHON)" != 1 ]; then \
		echo "make install: $(INSTALL_PYTHON) lives in $$base, a private home the bukt user cannot read; use a system python3 (INSTALL_PYTHON=/usr/bin/python3) or ALLOW_PRIVATE_PYTHON=1" >&2; exit 2; fi;; esac
	test -x $(STAGE)/bin/python || $(INSTALL_PYTHON) -m venv $(STAGE)
	$(STAGE)/bin/python -m pip --disable-pip-version-check -q install --upgrade pip "setuptools>=74" "Cython>=3.0.10" wheel
	$(STAGE)/bin/python -m pip --disable-pip-version-check -q install --no-compile --no-build-isolation .
	@# the environment runs from PREFIX: every path that names the staging area is
	@# rewritten (a no-op without DESTDIR), then compiled with PREFIX's paths
	if [ -n "$(DESTDIR)" ]; then \
		grep -rlI --null -F '$(STAGE)' $(STAGE)/bin $(STAGE)/pyvenv.cfg $(STAGE)/lib 2>/dev/null \
			| xargs -0 -r sed -i 's#$(STAGE)#$(PREFIX)#g'; fi
	$(STAGE)/bin/python -m compileall -q $(if $(DESTDIR),-s $(DESTDIR) -p /) $(STAGE)/lib

install-units:
	install -d $(DESTDIR)$(UNITDIR)
	sed 's#/opt/bukt/#$(PREFIX)/#g; s#/etc/bukt/#$(SYSCONFDIR)/bukt/#g' systemd/bukt.service \
		> $(DESTDIR)$(UNITDIR)/bukt.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/bukt.service
	install -D -m 0644 systemd/bukt.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/bukt.conf
	install -D -m 0644 systemd/bukt.tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/bukt.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/bukt/bukt.yaml || { \
		install -d $(DESTDIR)$(SYSCONFDIR)/bukt && \
		sed 's#^data_dir: .*#data_dir: /var/lib/bukt#' conf/bukt.yaml \
			> $(DESTDIR)$(SYSCONFDIR)/bukt/bukt.yaml && \
		chmod 0640 $(DESTDIR)$(SYSCONFDIR)/bukt/bukt.yaml; }
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERSDIR)/bukt.conf && \
		systemd-tmpfiles --create $(TMPFILESDIR)/bukt.conf && \
		chgrp bukt $(SYSCONFDIR)/bukt/bukt.yaml && \
		systemctl daemon-reload; fi

# Each benchmark runs its reference system (a dict and LMDB, Redis, a bare falcon app,
# nginx) and Bukt in the same run and prints ratios; the Debian tools the server-side
# ones drive (redis-server, redis-benchmark, wrk, nutcracker, nginx) are installed when
# missing, as root.
bench: build
	@for tool in redis-server:redis-server redis-benchmark:redis-tools wrk:wrk \
			nutcracker:nutcracker nginx:nginx-light; do \
		command -v $${tool%%:*} >/dev/null || [ -x /usr/sbin/$${tool%%:*} ] || \
			need="$$need $${tool##*:}"; done; \
	if [ -n "$$need" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$need >/dev/null; \
		else echo "make bench needs:$$need (apt-get install)"; exit 1; fi; fi
	$(PIP) install lmdb redis
	$(PY) bench/local.py
	$(PY) bench/tcp.py --loops epoll,uvloop
	$(PY) bench/resp.py
	$(PY) bench/http.py
	$(PY) bench/durability.py
	$(PY) bench/fsync.py
	$(PY) bench/hardening.py
	$(PY) bench/watch.py
	$(PY) bench/scale.py
	$(PY) bench/objects.py
	$(PY) bench/idle.py

lint: $(DEPS)
	mkdir -p build && $(PY) -m cython -3 -a -I cext/includes -I . --module-name bukt._core cext/core.pyx -o build/core.c && echo "annotation of the hot path: build/core.html"

clean:
	rm -rf build dist *.egg-info bukt/*.so bukt/tcp/*.so bukt/tcp/*.c bukt/writer/*.so bukt/writer/*.c \
		cext/*.c cext/*.html var .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
