# Two commands on a fresh machine: `make demo` (a real generation on the tiny local model,
# ending in a playable video) and `make test` (the whole suite). Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt requirements-cluster.txt constraints.txt | cksum | cut -d' ' -f1)
DEMO_OUT ?= outputs

.PHONY: demo test venv system-deps clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt requirements-cluster.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -r requirements-test.txt
	rm -f $(VENV)/.installed-* && touch $@

# ffprobe (Debian ffmpeg) checks the videos we write; Debian chromium runs the real-browser tests
# (Playwright drives /usr/bin/chromium, no browser download). Each is only installed when missing.
system-deps:
	@command -v ffprobe >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffprobe missing: install ffmpeg (e.g. sudo apt-get install ffmpeg); tests that need it are skipped"; fi; }
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium missing: install it (e.g. sudo apt-get install chromium chromium-driver); browser tests are skipped"; fi; }

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python framepack_cli.py generate --model tiny --image assets/demo.png \
	  --prompt "a paper boat drifts down a stream" --duration 2 --fps 30 --resolution 240 \
	  --steps 4 --save-frames --out $(DEMO_OUT)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs models/tiny-random
