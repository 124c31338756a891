"""Beyond one machine's llama.cpp: hand models to vLLM (``mistralkit vllm serve``).

``vllm.plan`` / ``vllm.build_command`` only read files; ``process.start`` needs vLLM on PATH.
"""

from .process import start
from .vllm import Launch, build_command, plan

__all__ = ["Launch", "build_command", "plan", "start"]
