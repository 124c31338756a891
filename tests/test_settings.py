from pathlib import Path

import pytest

from mistralkit.errors import InvalidParameter
from mistralkit.settings import Settings, load


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("temperature = 0.3\ntop_k = 7\nmax-tokens = 99\n")
    env = {"MISTRALKIT_TOP_K": "11", "LLM_MAX_NEW_TOKENS": "55"}
    loaded = load(cli={"top_k": 13, "seed": None}, environ=env, config_file=config)
    s = loaded.settings
    assert (s.temperature, s.top_k, s.max_tokens, s.top_p) == (0.3, 13, 55, 0.95)
    assert loaded.sources["temperature"].startswith("config file")
    assert loaded.sources["top_k"] == "command line"
    assert loaded.sources["max_tokens"] == "env LLM_MAX_NEW_TOKENS"
    assert loaded.sources["top_p"] == "default"
    assert loaded.sources["seed"] == "default"


def test_mistralkit_env_beats_llm_alias(tmp_path: Path):
    env = {"LLM_TEMPERATURE": "0.1", "MISTRALKIT_TEMPERATURE": "0.9", "LLM_MODEL_PATH": "/m.gguf",
           "LLM_DEVICE": "cpu", "LLM_LOG_LEVEL": "DEBUG", "MISTRALKIT_GREEDY": "yes"}
    s = load(environ=env, config_file=tmp_path / "none.toml").settings
    assert (s.temperature, s.model, s.device, s.log_level, s.greedy) == (0.9, "/m.gguf", "cpu", "debug", True)


@pytest.mark.parametrize("env, message", [
    ({"MISTRALKIT_TEMPERATURE": "-1"}, "temperature=-1.0: must be >= 0"),
    ({"MISTRALKIT_TOP_K": "many"}, "top_k must be int"),
    ({"LLM_DEVICE": "tpu"}, "device='tpu'"),
    ({"MISTRALKIT_CTX": "8"}, "ctx=8: must be >= 64"),
])
def test_bad_values_are_explained(tmp_path: Path, env, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(environ=env, config_file=tmp_path / "none.toml")


def test_config_file_errors_name_the_file(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("temprature = 1\n")
    with pytest.raises(InvalidParameter, match="unknown setting 'temprature'"):
        load(environ={}, config_file=config)
    config.write_text("temperature = [\n")
    with pytest.raises(InvalidParameter, match=str(config)):
        load(environ={}, config_file=config)


def test_defaults_are_valid():
    assert Settings().max_tokens == 512
