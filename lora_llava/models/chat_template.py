"""Rendering a conversation with the processor's own chat template, and finding the supervised answer spans.

The template is applied to growing prefixes of the conversation: the text before an assistant turn (with the
generation prompt) and the text through it; the reply's span runs from the end of the first to the end of the
end-of-turn token (the tokenizer's EOS: `</s>` for Mistral, `<|im_end|>` for Qwen2) in the second. A template
that does not render prefixes as prefixes of the whole, or that drops a turn's text, is refused rather than
trained on wrongly.
"""

from __future__ import annotations

from lora_llava.errors import ConfigError


def _messages(turns, system: str | None) -> list[dict]:
    # One text item per turn: templates written for content lists render it, and image tokens stay where the
    # data put them (templates that render "all images first" would otherwise move them).
    head = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return head + [{"role": t.role, "content": [{"type": "text", "text": t.text}]} for t in turns]


def _apply(processor, turns, system, generation_prompt: bool) -> str:
    template = getattr(processor, "chat_template", None)
    if not template:
        raise ConfigError(f"{type(processor).__name__} has no chat template; this family renders conversations "
                          "with the checkpoint's chat_template.jinja: add one to the model folder")
    return processor.tokenizer.apply_chat_template(_messages(turns, system), chat_template=template,
                                                   tokenize=False, add_generation_prompt=generation_prompt)


def render_with_template(processor, turns, system: str | None = None, generation_prompt: bool = False):
    """(text, spans) as Family.render promises, through the processor's chat template."""
    if generation_prompt and (not turns or turns[-1].role == "assistant"):
        raise ValueError("a generation prompt must end with a user turn")
    eos = processor.tokenizer.eos_token
    text = _apply(processor, turns, system, generation_prompt)
    spans = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        before = _apply(processor, turns[:i], system, True)
        through = _apply(processor, turns[: i + 1], system, False)
        end = through.find(eos, len(before))
        if not (through.startswith(before) and text.startswith(through[:end]) and end >= 0
                and turn.text.strip() in through[len(before):end]):
            raise ConfigError("the chat template does not render an assistant turn as a prefix of the whole "
                              f"conversation followed by {eos!r}; answer-only labels cannot be placed")
        spans.append((len(before), end + len(eos)))
    for turn in turns:
        if turn.text.strip() and turn.text.strip() not in text:
            raise ConfigError(f"the chat template dropped the text of a {turn.role} turn: "
                              f"{turn.text.strip()[:60]!r}")
    return text, spans
