"""Streaming text out of generated ids (client/generation.py TextAssembler), with the model's real tokenizer."""

from __future__ import annotations

from typing import Any

import pytest

from inferchain.client.generation import TextAssembler

TEXT = "Café ☕ at 7:30 — 東京の空は青い 🌊🐚, then ñandú; la mer est calme."


def stream(tokenizer: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], TextAssembler]:
    text = TextAssembler(tokenizer, stop)
    pieces = []
    for i in ids:
        pieces.append(text.add(i))
        if text.stopped:
            break
    pieces.append(text.finish())
    return pieces, text


def test_deltas_add_up_to_the_decoded_text_across_split_characters(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 20
    pieces, text = stream(tokenizer, ids + [tokenizer.eos_token_id])
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert text.text == TEXT and not text.stopped
    assert all("\ufffd" not in p for p in pieces)  # a character split over tokens comes out whole
    assert sum(1 for p in pieces if p) > 10  # streamed piece by piece, not at the end


@pytest.mark.parametrize("stop", [("b", "a"), ("a", "b"), ("zz", "ab", "a")])
def test_the_earliest_stop_string_ends_the_text_whatever_their_order(tokenizer, stop):
    ids = tokenizer("xxab yy", add_special_tokens=False)["input_ids"]
    pieces, text = stream(tokenizer, ids, stop)
    assert "".join(pieces) == text.text == "xx"
    assert text.stopped


def test_a_stop_string_over_several_tokens_is_never_streamed_in_part(tokenizer):
    ids = tokenizer("Hello world, the sea is calm tonight.", add_special_tokens=False)["input_ids"]
    pieces, text = stream(tokenizer, ids, ("sea is calm",))
    assert "".join(pieces) == "Hello world, the "
    assert text.stopped and len(text.ids) < len(ids)  # stopped at the string's last token, not at the end


class CountingTokenizer:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.longest = 0

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        self.longest = max(self.longest, len(ids))
        return str(self.inner.decode(ids, **kwargs))


def test_each_token_decodes_a_short_window_not_everything_so_far(tokenizer):
    ids = tokenizer(TEXT * 20, add_special_tokens=False)["input_ids"]
    counting = CountingTokenizer(tokenizer)
    pieces, text = stream(counting, ids, ("never appears",))
    assert len(ids) > 400
    assert "".join(pieces) == text.text == TEXT * 20
    assert counting.longest <= 8  # one token of context, the new one, and a character's bytes still pending
