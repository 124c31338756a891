"""Server options, validated once: a non-loopback address needs an API key (or an explicit opt-out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidParameter
from ..http.runner import is_loopback
from ..settings import CorrectSettings, Settings


MAX_PARALLEL = 256  # llama.cpp's limit on sequences in one context (llama_max_parallel_sequences)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    cors_origins: tuple[str, ...] = ()
    queue_size: int = 8  # requests per model, running + waiting; more get 429
    keepalive_s: float = 10.0  # an SSE comment after this long without an event (long prompts, queues)
    parallel: int | None = None  # generations at once per GGUF model; None = 4, fewer if memory is short
    memory_budget: int | None = None  # bytes for loaded models; None = available memory at start
    max_body_bytes: int = 4 << 20
    body_timeout_s: float = 30.0  # longest wait for each part of a request body (408 after)
    model_dirs: tuple[Path, ...] = ()  # folders whose files a request may name as models/adapters
    docs_dirs: tuple[Path, ...] = ()  # folders whose files a request may add to a collection (vector store)
    shutdown_grace_s: float = 10.0
    preload: str | None = None  # model to load at start
    settings: Settings = field(default_factory=Settings)  # ctx, threads, kv_type… for every model
    correct: CorrectSettings = field(default_factory=CorrectSettings)  # /v1/correct's defaults

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise InvalidParameter(f"queue size {self.queue_size}: must be >= 1")
        if self.parallel is not None and not 1 <= self.parallel <= MAX_PARALLEL:
            raise InvalidParameter(f"--parallel {self.parallel}: must be between 1 and {MAX_PARALLEL}")
        if not self.keepalive_s > 0:
            raise InvalidParameter(f"--keepalive {self.keepalive_s}: must be more than 0 seconds")
        if not self.body_timeout_s > 0:
            raise InvalidParameter(f"body timeout {self.body_timeout_s}: must be more than 0 seconds")
        self.model_dirs = tuple(_folder(d) for d in self.model_dirs)
        self.docs_dirs = tuple(_folder(d, "--allow-docs-paths", "name a folder of documents") for d in self.docs_dirs)
        if not (0 < self.port < 65536):
            raise InvalidParameter(f"port {self.port}: must be between 1 and 65535")
        if not is_loopback(self.host) and not self.api_keys and not self.insecure_no_auth:
            raise InvalidParameter(
                f"refusing to serve on {self.host} without an API key: anyone on the network could use it",
                hint="pass --api-key / --api-key-file / MISTRALKIT_API_KEY, or --insecure-no-auth if you mean it",
            )


def _folder(path: str | Path, flag: str = "--allow-model-paths",
            hint: str = "name a folder that holds .gguf files") -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise InvalidParameter(f"{flag} {path}: not a folder", hint=hint)
    return folder
