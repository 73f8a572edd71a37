"""LLaVA-OneVision (`model_type: llava_onevision`): SigLIP-400M tower (384 px, 729 patches, no CLS), MLP
projector, Qwen2 language model, "anyres_max_9": a base view plus up to 6x6 tiles of 384 px, unpadded, with an
`image_newline` per row, and the tile features pooled down when they exceed 9 tiles' worth. A sample with
several images takes each as one base view (729 + 1 tokens) instead, so the batch carries `batch_num_images`
beside `image_sizes`.

The processor is built from its tokenizer and image processor alone: its video processor needs torchvision,
which image fine-tuning does not use. Conversations use the processor's chat template (Qwen2 ChatML:
"<|im_start|>user\\n<image>\\nQ<|im_end|>\\n<|im_start|>assistant\\nA<|im_end|>\\n").
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

from transformers import LlavaOnevisionProcessor

from lora_llava.models.base import Family

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set text = message['content'] if message['content'] is string else "
    "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + text + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# 1x1 to 3x3 grids of the tiny 32 px tower's tiles (the published checkpoints go to 6x6 of 384 px).
TINY_PINPOINTS = [[32 * h, 32 * w] for h in range(1, 4) for w in range(1, 4)]


class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor (whose construction needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens, vision_feature_select_strategy,
                         chat_template, image_token, video_token, vision_aspect_ratio, **kwargs)

    def to_dict(self):
        # Saved folders name the real class, so they load anywhere with AutoProcessor.
        return {**super().to_dict(), "processor_class": "LlavaOnevisionProcessor"}


class LlavaOnevision(Family):
    def load_processor(self, path: str, **kwargs):
        return ImageOnlyOnevisionProcessor.from_pretrained(path, **kwargs)

    def image_token_counts(self, processor, sizes):
        if len(sizes) > 1:  # several images: one base view each, plus a newline
            single = processor.num_image_tokens + 1
            return [single - (processor.vision_feature_select_strategy == "default")] * len(sizes)
        return super().image_token_counts(processor, sizes)

    def process_images(self, image_processor, images):
        # Nested, so that the processor sees one sample: several images are not tiled (batch_num_images).
        out = image_processor(images=[list(images)], return_tensors="pt")
        return {key: out[key] for key in ("pixel_values", *self.image_inputs)}

    def image_tokens_for_size(self, config, size):
        vision = config.vision_config
        shim = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=config.image_grid_pinpoints),
                               num_image_tokens=(vision.image_size // vision.patch_size) ** 2,
                               vision_aspect_ratio=config.vision_aspect_ratio)
        shim._get_unpadded_features = partial(LlavaOnevisionProcessor._get_unpadded_features, shim)
        count = LlavaOnevisionProcessor._get_number_of_features(shim, *size, vision.image_size, vision.image_size)
        return count - (1 if config.vision_feature_select_strategy == "default" else 0)

    def build_tiny(self, seed: int):
        from transformers import LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil, SiglipVisionConfig

        from lora_llava.models.tiny import QWEN2, tiny_text_config, tiny_tokenizer

        tokenizer = tiny_tokenizer(QWEN2)
        image_processor = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                          image_grid_pinpoints=TINY_PINPOINTS)
        processor = ImageOnlyOnevisionProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                                num_image_tokens=16, vision_feature_select_strategy="full",
                                                chat_template=CHATML_TEMPLATE)
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=32, patch_size=8)
        config = LlavaOnevisionConfig(vision_config=vision, text_config=tiny_text_config("qwen2", tokenizer),
                                      image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                      image_grid_pinpoints=TINY_PINPOINTS, vision_feature_select_strategy="full",
                                      vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9")
        return config, processor


LLAVA_ONEVISION = LlavaOnevision(name="llava-onevision", model_types=("llava_onevision",),
                                 processor_class="LlavaOnevisionProcessor",
                                 image_inputs=("image_sizes", "batch_num_images"), anyres=True,
                                 tiny_name="tiny-onevision")
