# Two commands on a fresh machine: `make demo` (a real generation on the tiny local model,
# ending in a playable video) and `make test` (the whole suite). Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt requirements-nodeps.txt constraints.txt | cksum | cut -d' ' -f1)
DEMO_OUT ?= outputs

SDNEXT_CACHE ?= build/sdnext

.PHONY: demo test test-sdnext sdnext venv system-deps clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt requirements-nodeps.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -r requirements-test.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -c constraints.txt -r requirements-nodeps.txt
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

# The real SD.Next (../shared/vendor snapshot) with its own venv, built once into $(SDNEXT_CACHE) and
# rebuilt when the snapshot or the recipe changes (tests_sdnext/build_sdnext.py, host-pins.txt).
sdnext:
	$(PYTHON) tests_sdnext/build_sdnext.py --cache $(SDNEXT_CACHE)

# This checkout installed into that SD.Next (git clone), launched on 127.0.0.1 and driven with
# Playwright + Debian chromium; artifacts in build/sdnext-run/ and build/sdnext-screens/.
test-sdnext: $(STAMP) system-deps sdnext
	FRAMEPACK_SDNEXT_CACHE=$(SDNEXT_CACHE) $(BIN)/python -m pytest -q -p no:cacheprovider -s tests_sdnext

clean:
	rm -rf $(VENV) outputs models/tiny-random build/sdnext-run build/sdnext-screens
