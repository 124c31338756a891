"""Beyond one machine's llama.cpp: hand models to vLLM (``mistralkit vllm serve``).

``vllm.plan`` / ``vllm.build_command`` only read files; ``process.start`` needs vLLM on PATH.
"""

from .process import start
from .vllm import Plan, build_command, plan

__all__ = ["Plan", "build_command", "plan", "start"]
