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


def chat_template(image_token: str) -> str:
    """`render` as a Jinja chat template, for a checkpoint whose processor has none: a served model
    (`transformers serve`, vLLM) then reads the prompt it was trained on. OpenAI-style messages: content is a
    string or a list of {"type": "text"|"image", ...}; each image becomes `image_token` and a newline ahead of the
    turn's text, as `<image>\\n` leads a sample's turn. A user turn already ends in "ASSISTANT:", so
    add_generation_prompt adds nothing."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
        "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
        "{%- set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') -%}"
        "{%- if message['role'] == 'system' -%}{{ text + ' ' }}"
        "{%- elif message['role'] == 'user' -%}{{ 'USER: ' }}"
        "{%- for part in parts if part['type'] == 'image' -%}{{ '" + image_token + "\\n' }}{%- endfor -%}"
        "{{ text + ' ASSISTANT:' }}"
        "{%- else -%}{{ ' ' + text + eos_token }}{%- endif -%}"
        "{%- endfor -%}"
    )
