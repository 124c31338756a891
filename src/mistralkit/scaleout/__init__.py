"""Beyond one machine's llama.cpp: hand models to vLLM (``mistralkit vllm serve``).

``vllm.plan`` / ``vllm.build_command`` only read files; ``vllm.start`` needs vLLM on PATH.
"""

from .vllm import Plan, build_command, plan, start

__all__ = ["Plan", "build_command", "plan", "start"]
