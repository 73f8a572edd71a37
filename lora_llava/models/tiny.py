"""A tiny random LLaVA and its processor, built locally and deterministically from a seed.

It has the real architecture (CLIP vision tower, two-layer projector, Llama language model, LlavaProcessor with a
fast tokenizer and CLIPImageProcessor), only small. It is saved to a cache directory and then loaded through
`from_pretrained` like any checkpoint, so quantization and every other loading path are exercised for real.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
IMAGE_SIZE = 32
PATCH_SIZE = 8
# Words the tiny tokenizer learns merges for; any other text still encodes, byte by byte.
CORPUS = (
    "USER: ASSISTANT: What color is the shape? Where is the shape? top bottom left right What is in the image? Answer with one word. "
    "red green blue yellow purple orange white black circle square triangle cross yes no "
    "Context: Question: Options: The answer is A B C D E. A. B. C. D. Which of these"
)
TINY_VERSION = 1  # bump when the construction below changes, so caches are rebuilt


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def _build_processor():
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=_build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def _build_model(seed: int, tokenizer):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Wider than the 0.02 default so a 64-wide model can still produce confident logits.
        initializer_range=0.1,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _cache_root() -> Path:
    root = os.environ.get("LORA_LLAVA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lora_llava")
    return Path(root)


def tiny_checkpoint(seed: int = 0) -> Path:
    """Directory holding the tiny model and processor for `seed`, built on first use (atomically)."""
    key = hashlib.sha256(json.dumps([TINY_VERSION, seed, CORPUS]).encode()).hexdigest()[:12]
    target = _cache_root() / "tiny" / f"seed{seed}-{key}"
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    processor = _build_processor()
    model = _build_model(seed, processor.tokenizer)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
