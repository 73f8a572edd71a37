"""Tiny random models and processors of each family, built locally and deterministically from a seed.

Each has its family's real architecture (vision tower, projector, language model, processor with a fast
tokenizer and the slow image processor), only small, and a tokenizer with its family's special tokens and
chat format. It is saved to a cache directory and then loaded through `from_pretrained` like any checkpoint,
so quantization and every other loading path are exercised for real. `model.path=tiny` (LLaVA-1.5),
`tiny-next`, `tiny-onevision`; the family module says what to build (`build_tiny`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# Words the tiny tokenizers learn merges for; any other text still encodes, byte by byte.
CORPUS = (
    "USER: ASSISTANT: What color is the shape? Where is the shape? top bottom left right What is in the image? Answer with one word. "
    "red green blue yellow purple orange white black circle square triangle cross yes no "
    "Context: Question: Options: The answer is A B C D E. A. B. C. D. Which of these"
)
TINY_VERSION = 2  # bump when a construction changes, so caches are rebuilt


@dataclass(frozen=True)
class TokenizerSpec:
    special: tuple[str, ...]
    eos: str
    pad: str
    bos: str | None = None
    unk: str | None = None
    corpus: str = CORPUS


VICUNA = TokenizerSpec(("<unk>", "<s>", "</s>", "<pad>", "<image>"), eos="</s>", pad="<pad>", bos="<s>", unk="<unk>")
MISTRAL = TokenizerSpec(("<unk>", "<s>", "</s>", "<pad>", "<image>"), eos="</s>", pad="<pad>", bos="<s>",
                        unk="<unk>", corpus=CORPUS + " [INST] [/INST]")
# Qwen2: no BOS; a turn ends with <|im_end|>, which is also the EOS generation stops at.
QWEN2 = TokenizerSpec(("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"), eos="<|im_end|>",
                      pad="<|endoftext|>", corpus=CORPUS + " system user assistant You are a helpful assistant.")


def tiny_tokenizer(spec: TokenizerSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=spec.unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=list(spec.special), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([spec.corpus] * 4, trainer=trainer)
    if spec.bos:
        tok.post_processor = TemplateProcessing(single=f"{spec.bos} $A",
                                                special_tokens=[(spec.bos, spec.special.index(spec.bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=spec.bos, eos_token=spec.eos, unk_token=spec.unk,
                                   pad_token=spec.pad, extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left")


def tiny_text_config(model_type: str, tokenizer):
    """A 2-layer, 64-wide language model of `model_type` (llama, mistral, qwen2) for `tokenizer`."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        model_type, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        # Wider than the 0.02 default so a 64-wide model can still produce confident logits.
        initializer_range=0.1,
    )


def _build_model(config, seed: int, tokenizer):
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _cache_root() -> Path:
    root = os.environ.get("LORA_LLAVA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lora_llava")
    return Path(root)


def tiny_families() -> dict:
    """`model.path` value -> the family that builds it."""
    from lora_llava.models.families import FAMILIES

    return {family.tiny_name: family for family in FAMILIES if family.tiny_name}


def is_tiny(path: str) -> bool:
    return path in tiny_families()


def tiny_checkpoint(seed: int = 0, name: str = "tiny") -> Path:
    """Directory holding the tiny model `name` and its processor for `seed`, built on first use (atomically)."""
    family = tiny_families()[name]
    specs = [asdict(s) for s in (VICUNA, MISTRAL, QWEN2)]
    key = hashlib.sha256(json.dumps([TINY_VERSION, seed, name, specs]).encode()).hexdigest()[:12]
    target = _cache_root() / "tiny" / f"{name}-seed{seed}-{key}"
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    config, processor = family.build_tiny(seed)
    _build_model(config, seed, processor.tokenizer).save_pretrained(tmp)
    processor.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
