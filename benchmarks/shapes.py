"""Model shapes for the benchmarks: LLaVA-1.5-7B exactly (for the GPU script, which has no config files to read)
and a small random LLaVA that keeps LLaVA-1.5's real image-token count (336 px, patch 14: 576 tokens)."""

from __future__ import annotations


def llava_15_7b_config():
    """llava-hf/llava-1.5-7b-hf's architecture: CLIP ViT-L/14-336 + 2-layer GELU projector + Vicuna-7B (Llama-2)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576,
                       projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                       multimodal_projector_bias=True, pad_token_id=32001, tie_word_embeddings=False)


def small_llava_config(vocab_size: int, image_token_index: int, pad_token_id: int, image_size: int = 336,
                       patch_size: int = 14, hidden: int = 128, layers: int = 2):
    """A LLaVA small enough for two CPU cores, with the real vocabulary (so the lm_head costs what it costs)
    and the real image-token count."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch_size, projection_dim=64)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab_size,
                       max_position_embeddings=4096, pad_token_id=pad_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                       image_seq_length=(image_size // patch_size) ** 2, vision_feature_layer=-2,
                       vision_feature_select_strategy="default")


# Published architectures of the llava-hf conversions (their config.json numbers), for the planner's families table
# and tests that need real shapes without a download.
CLIP_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu"}
SIGLIP_384 = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26,
                  "num_attention_heads": 16, "image_size": 384, "patch_size": 14}
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]
TEXT = {
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                       "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32064, "tie_word_embeddings": False},
    "vicuna-7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "tie_word_embeddings": False},
    "vicuna-13b": {"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                       "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32064, "tie_word_embeddings": False},
    "qwen2-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                       "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 152000, "tie_word_embeddings": True},
    "qwen2-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152128, "tie_word_embeddings": False},
}


def llava_next_config(text: str):
    from transformers import LlavaNextConfig

    return LlavaNextConfig(vision_config=dict(CLIP_336), text_config=dict(TEXT[text]), image_token_index=32000,
                           image_grid_pinpoints=NEXT_PINPOINTS, projector_hidden_act="gelu", vision_feature_layer=-2,
                           vision_feature_select_strategy="default", tie_word_embeddings=False)


def llava_onevision_config(text: str):
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(vision_config=dict(SIGLIP_384), text_config=dict(TEXT[text]),
                                image_token_index=151646, image_grid_pinpoints=ONEVISION_PINPOINTS,
                                projector_hidden_act="gelu", vision_feature_layer=-1,
                                vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
                                multimodal_projector_bias=True, tie_word_embeddings=TEXT[text]["tie_word_embeddings"])


def published_configs() -> dict:
    """conf/model name -> its architecture, built from the published numbers (no download)."""
    return {
        "llava-1.5-7b": llava_15_7b_config(),
        "llava-next-mistral-7b": llava_next_config("mistral-7b"),
        "llava-next-vicuna-7b": llava_next_config("vicuna-7b"),
        "llava-next-vicuna-13b": llava_next_config("vicuna-13b"),
        "llava-onevision-0.5b": llava_onevision_config("qwen2-0.5b"),
        "llava-onevision-7b": llava_onevision_config("qwen2-7b"),
    }
