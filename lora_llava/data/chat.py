"""Conversation templates: turns -> the exact text the model reads, and where the supervised answers lie.

`llava-1.5` is LLaVA-1.5's vicuna_v1 layout as the transformers checkpoints use it at inference
("USER: <image>\\nQ ASSISTANT: A</s>USER: ..."); an optional system prompt is prepended followed by a space.
"""

from __future__ import annotations

from lora_llava.data.samples import Turn


def render(turns: list[Turn], eos: str, system: str | None = None, generation_prompt: bool = False):
    """Return (text, answer_spans). Each span is (start, end) in characters: the assistant's reply plus its EOS,
    the only text that is trained on."""
    text = f"{system} " if system else ""
    spans = []
    for turn in turns:
        if turn.role == "user":
            text += f"USER: {turn.text} ASSISTANT:"
        else:
            start = len(text)
            text += f" {turn.text}{eos}"
            spans.append((start, len(text)))
    if generation_prompt and (not turns or turns[-1].role == "assistant"):
        raise ValueError("a generation prompt must end with a user turn")
    return text, spans
