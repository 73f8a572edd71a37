"""The "USER: <image>\\nQ ASSISTANT: A</s>" training prompt format as a Jinja chat template, for a merged folder
whose processor has none. (Conversations are rendered by the model family: lora_llava/models/.)
"""

from __future__ import annotations


def chat_template(image_token: str) -> str:
    """The training format as a Jinja chat template, for a checkpoint whose processor has none: a served model
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
