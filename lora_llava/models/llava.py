"""LLaVA-1.5 (`model_type: llava`): CLIP ViT-L/14-336 tower, two-layer MLP projector, Vicuna (Llama) language
model; every image is one 336 px view, 576 tokens.

Conversations are rendered in LLaVA's own training format (vicuna_v1: "USER: <image>\\nQ ASSISTANT: A</s>"),
not through the checkpoint's chat template: the llava-hf template ends an assistant turn with a space and no
`</s>`, so a model trained on it would not learn to stop.
"""

from __future__ import annotations

from lora_llava.models.base import Family


class Llava(Family):
    def image_token_counts(self, processor, sizes):
        # One fixed-size view per image whatever its size: the count of the processor's crop, per image.
        crop = processor.image_processor.crop_size
        counts = processor._get_num_multimodal_tokens(image_sizes=[(crop["height"], crop["width"])])
        return [counts.num_image_tokens[0]] * len(sizes)

    def image_tokens_for_size(self, config, size):
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        # CLIP adds a CLS token; the "default" strategy drops it again.
        return patches + (0 if config.vision_feature_select_strategy == "default" else 1)

    def render(self, processor, turns, system=None, generation_prompt=False):
        eos = processor.tokenizer.eos_token
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

    def serving_template(self, processor) -> str:
        return vicuna_chat_template(processor.image_token)

    def build_tiny(self, seed: int):
        from transformers import CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaProcessor

        from lora_llava.models.tiny import VICUNA, tiny_text_config, tiny_tokenizer

        tokenizer = tiny_tokenizer(VICUNA)
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                               do_center_crop=True),
            tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
            num_additional_image_tokens=1)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)
        config = LlavaConfig(vision_config=vision, text_config=tiny_text_config("llama", tokenizer),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16,
                             vision_feature_select_strategy="default", vision_feature_layer=-2)
        return config, processor


LLAVA = Llava(name="llava-1.5", model_types=("llava",), processor_class="LlavaProcessor", tiny_name="tiny")


def vicuna_chat_template(image_token: str) -> str:
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
