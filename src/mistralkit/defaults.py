"""Defaults that several surfaces share and that must agree: llama.cpp's sampling defaults, taken by
``GenerationParams``, ``Settings`` (CLI, environment, config.toml) and the HTTP request bodies."""

SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
