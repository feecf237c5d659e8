# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# supervision (a dependency of Roboflow `trackers`) asks for opencv-python, the GUI build;
# we keep only opencv-python-headless (same cv2 module, no Qt/X11) on servers.
HEADLESS_FIX = $(PIP) uninstall -q -y opencv-python >/dev/null 2>&1 || true; \
	$(PIP) install -q --force-reinstall --no-deps "opencv-python-headless>=4.10,<6"

.PHONY: demo test install install-test system-deps bench bench-ingest bench-scene bench-search bench-reid bench-alerts clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	$(HEADLESS_FIX)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[test]'
	$(HEADLESS_FIX)
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Debian packages the tests drive as real processes: ffmpeg (RTSP server, ffprobe), redis-server,
## mosquitto (the MQTT sink's broker).
system-deps:
	@missing=""; \
	for pair in ffmpeg:ffmpeg ffprobe:ffmpeg redis-server:redis-server mosquitto:mosquitto; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || test -x /usr/sbin/$${pair%%:*} || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

demo: install
	$(BIN)/python benchmarks/demo_clip.py var/demo/staged-street.mp4 || \
	  echo "staged clip not written (it needs ../shared); camera staged-street will report it missing"
	$(BIN)/baqylau run configs/demo.yaml --until-eof --summary-json var/demo/summary.json
	$(BIN)/baqylau alerts list --config configs/demo.yaml
	$(BIN)/baqylau tickets list --config configs/demo.yaml --table
	$(BIN)/baqylau routes status --config configs/demo.yaml
	$(BIN)/baqylau search colour --config configs/demo.yaml --case DEMO --user demo --upper blue --limit 5 \
	  --sheet var/demo/search-blue.jpg

test: system-deps install-test
	$(BIN)/python -m pytest -q

bench: install-test system-deps
	$(BIN)/python benchmarks/pipeline.py --repeat 5

bench-ingest: install-test system-deps
	$(BIN)/python benchmarks/ingest.py --json

bench-scene: install-test
	$(BIN)/python benchmarks/scene.py --json

bench-search: install-test
	$(BIN)/python benchmarks/search.py --json

bench-alerts: install-test system-deps
	$(BIN)/python benchmarks/alerts.py --json

bench-reid: install-test
	$(BIN)/python benchmarks/reid.py --json
	$(BIN)/python benchmarks/watchlist_e2e.py --json

clean:
	rm -rf var .pytest_cache
