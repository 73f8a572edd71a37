"""LLaVA-NeXT / v1.6 (`model_type: llava_next`): CLIP ViT-L/14-336 tower, MLP projector, a Vicuna or Mistral
language model, and "anyres": an image becomes a 336 px base view plus a grid of 336 px tiles chosen from
`image_grid_pinpoints` by its aspect ratio; the tile features are unpadded to the image's shape and each row
ends with a learned `image_newline` token. So the token count depends on each image's size (1,000-2,900 for the
published grids) and the batch carries `image_sizes`.

`image_newline` is a bare parameter of the base model (not a module peft can save), so it stays as the
checkpoint trained it; the projector is trained as for LLaVA-1.5. Conversations use the processor's chat
template (llava-hf's Mistral checkpoint: "[INST] <image>\\nQ [/INST] A</s>").
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

from lora_llava.models.base import Family

# Mistral's instruction format; a system prompt opens the first instruction. The tokenizer adds <s>.
MISTRAL_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- set text = message['content'] if message['content'] is string else "
    "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = text + '\\n\\n' -%}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST] ' + ns.system + text + ' [/INST]' }}{%- set ns.system = '' -%}"
    "{%- else -%}{{ ' ' + text + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)
# The published grids of 336 px tiles, scaled to the tiny 32 px tower: 1x2, 2x1, 2x2, 1x3, 3x1 tiles.
TINY_PINPOINTS = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]


class LlavaNext(Family):
    def image_tokens_for_size(self, config, size):
        # transformers' own count (LlavaNextProcessor), fed from the config instead of a processor.
        from transformers import LlavaNextProcessor

        vision = config.vision_config
        shim = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=config.image_grid_pinpoints),
                               patch_size=vision.patch_size, num_additional_image_tokens=1)  # CLIP's CLS
        shim._get_unpadded_features = partial(LlavaNextProcessor._get_unpadded_features, shim)
        count = LlavaNextProcessor._get_number_of_features(shim, *size, vision.image_size, vision.image_size)
        return count - (1 if config.vision_feature_select_strategy == "default" else 0)

    def build_tiny(self, seed: int):
        from transformers import (
            CLIPVisionConfig,
            LlavaNextConfig,
            LlavaNextImageProcessorPil,
            LlavaNextProcessor,
        )

        from lora_llava.models.tiny import MISTRAL, tiny_text_config, tiny_tokenizer

        tokenizer = tiny_tokenizer(MISTRAL)
        image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                     image_grid_pinpoints=TINY_PINPOINTS)
        processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                       chat_template=MISTRAL_TEMPLATE)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)
        config = LlavaNextConfig(vision_config=vision, text_config=tiny_text_config("mistral", tokenizer),
                                 image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                 image_grid_pinpoints=TINY_PINPOINTS, vision_feature_select_strategy="default",
                                 vision_feature_layer=-2)
        return config, processor


LLAVA_NEXT = LlavaNext(name="llava-next", model_types=("llava_next",), processor_class="LlavaNextProcessor",
                       image_inputs=("image_sizes",), anyres=True, tiny_name="tiny-next")
