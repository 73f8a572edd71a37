"""What a model family must say. One subclass per family (llava.py, llava_next.py, llava_onevision.py); nothing
outside lora_llava/models/ names a family, its classes or its module names: stages ask the family.

A family answers: which `model_type`s it serves; its module names (language model, vision tower, projector);
which modules are never quantized and where LoRA goes; how many tokens an image of a given size becomes (the
processor's own computation, so the sequence always matches the model's image features); what a batch carries
besides pixels; how a conversation is rendered and where its supervised answers lie; and the shapes the memory
planner needs from a config.json alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lora_llava.errors import ConfigError

Size = tuple[int, int]  # (height, width) of an image as loaded


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values this family serves
    processor_class: str  # the transformers processor class name its checkpoints use
    language_model: str = "language_model"
    vision_tower: str = "vision_tower"
    projector: str = "multi_modal_projector"
    image_inputs: tuple[str, ...] = ()  # image-processor outputs the model takes besides pixel_values
    anyres: bool = False  # images become a base view plus tiles chosen from `image_grid_pinpoints`
    tiny_name: str | None = None  # `model.path` of its tiny random build (models/tiny.py), if it has one

    # -- loading -----------------------------------------------------------------------------------------
    def load_processor(self, path: str, **kwargs):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, **kwargs)

    def never_quantized(self) -> list[str]:
        """Module names 4-bit/8-bit loading must leave alone: the tower, the projector and lm_head."""
        return [self.vision_tower, self.projector, "lm_head"]

    def lora_target_regex(self, target_modules, scope: str) -> str:
        """A regex peft matches against full module names. `language_model` scope keeps LoRA out of the vision
        tower, whose attention layers share the q_proj/k_proj/v_proj names."""
        names = "|".join(re.escape(m) for m in target_modules)
        if scope == "language_model":
            return rf"^(?!.*{self.vision_tower}).*{self.language_model}\..*\.({names})$"
        return rf"^.*\.({names})$"

    # -- tiles (anyres families) --------------------------------------------------------------------------
    def limit_tiles(self, pinpoints, tile: int, max_tiles: int | None):
        """`pinpoints` restricted to grids of at most `max_tiles` tiles (model.max_image_tiles)."""
        if max_tiles is None:
            return pinpoints
        if not self.anyres:
            raise ConfigError(f"model.max_image_tiles={max_tiles}: {self.name} has one view per image, no tiles; "
                              "remove the key (model.max_image_tiles=null)")
        kept = [p for p in pinpoints if (p[0] // tile) * (p[1] // tile) <= max_tiles]
        if not kept:
            raise ConfigError(f"model.max_image_tiles={max_tiles}: no tile grid of this checkpoint is that small "
                              f"(smallest: {min((p[0] // tile) * (p[1] // tile) for p in pinpoints)} tiles)")
        return kept

    def limit_processor_tiles(self, processor, max_tiles: int | None):
        """The processor and the model must agree on the grids, or token counts and features would differ."""
        if max_tiles is not None:
            image_processor = processor.image_processor
            image_processor.image_grid_pinpoints = self.limit_tiles(
                getattr(image_processor, "image_grid_pinpoints", None), self.tile_size(image_processor), max_tiles)
        return processor

    def limit_config_tiles(self, config, max_tiles: int | None):
        if max_tiles is not None:
            config.image_grid_pinpoints = self.limit_tiles(getattr(config, "image_grid_pinpoints", None),
                                                           config.vision_config.image_size, max_tiles)
        return config

    @staticmethod
    def tile_size(image_processor) -> int:
        size = image_processor.size
        return size.get("shortest_edge") or min(size["height"], size["width"])

    # -- images in the token sequence --------------------------------------------------------------------
    def image_token_counts(self, processor, sizes: list[Size | None]) -> list[int]:
        """Tokens each image of one sample occupies, by the processor's own computation."""
        counts = processor._get_num_multimodal_tokens(image_sizes=list(sizes))
        return list(counts["num_image_tokens"])

    def needs_image_sizes(self) -> bool:
        return self.anyres

    def process_images(self, image_processor, images) -> dict:
        """The image processor's outputs for the images of one sample (pixel_values first)."""
        out = image_processor(images=images, return_tensors="pt")
        return {key: out[key] for key in ("pixel_values", *self.image_inputs)}

    # -- the planner ---------------------------------------------------------------------------------------
    def image_tokens_for_size(self, config, size: Size) -> int:
        """Tokens one image of `size` becomes, from the model's config alone (the planner has no processor)."""
        raise NotImplementedError

    def max_image_tokens(self, config) -> int:
        """The most tokens one image can become with this config (its largest tile grid, undistorted)."""
        pinpoints = getattr(config, "image_grid_pinpoints", None) if self.anyres else None
        sizes = [tuple(p) for p in pinpoints] if pinpoints else [(config.vision_config.image_size,) * 2]
        return max(self.image_tokens_for_size(config, s) for s in sizes)

    def build_tiny(self, seed: int):
        """(config, processor) of a tiny random model of this family, for tests and CPU demos."""
        raise NotImplementedError(f"{self.name} has no tiny build")

    # -- conversations -----------------------------------------------------------------------------------
    def serving_template(self, processor) -> str | None:
        """A Jinja chat template rendering the training format, saved into a merged folder whose processor has
        none, so that a server (`transformers serve`, vLLM) prompts as training did. None: the family's
        checkpoints carry their own template, which training renders through already."""
        return None

    def render(self, processor, turns, system: str | None = None, generation_prompt: bool = False):
        """(text, answer spans): the conversation as the model reads it and, per assistant turn, the character
        span of its reply and end-of-turn token, the only text trained on. By default through the processor's
        chat template (see chat_template.py)."""
        from lora_llava.models.chat_template import render_with_template

        return render_with_template(processor, turns, system, generation_prompt)
