"""A small random LLaVA whose forward FLOPs split like LLaVA-1.5-7B's on a given length mix, so that a CPU ratio
between two training paths is evidence about the same ratio at 7B.

The old CPU figure (docs/benchmarks.md, 0.076) came from a model whose 32k-word lm_head was ~90% of its FLOPs; at 7B
the head is ~2%. Here every part is sized from the real config: the lm_head, the decoder's linears, its attention
(which grows with the square of a row's length, so padding costs it more), the CLIP tower per image and the
projector, each as a share of the whole forward over the rows of the mix. Image rows keep LLaVA-1.5's 576 image
tokens (336 px, patch 14). Counts are multiply-accumulates of the forward pass; SDPA with a padding mask computes
the whole n x n score matrix, so attention is counted as 2 n^2 q_dim per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PARTS = ("lm_head", "decoder linears", "decoder attention", "vision tower", "projector")


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    image_size: int
    patch_size: int

    @classmethod
    def of(cls, config) -> Shape:
        t, v = config.text_config, config.vision_config
        head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
        return cls(t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads,
                   t.num_key_value_heads or t.num_attention_heads, head_dim, t.vocab_size, v.hidden_size,
                   v.intermediate_size, v.num_hidden_layers, v.image_size, v.patch_size)


def mix_stats(rows: list[tuple[int, bool]]) -> tuple[int, int, int]:
    """(sum of lengths, sum of squared lengths, number of images) of (length, has_image) rows: all the FLOP
    count needs, since every part is linear in these."""
    return sum(n for n, _ in rows), sum(n * n for n, _ in rows), sum(1 for _, image in rows if image)


def macs(s: Shape, stats: tuple[int, int, int]) -> dict[str, float]:
    """Forward multiply-accumulates over a mix (`mix_stats`), by part; each row's length counts its image tokens."""
    tokens, squares, images = stats
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    patches = (s.image_size // s.patch_size) ** 2
    vision_tokens = patches + 1  # CLS
    tower = s.vision_layers * (vision_tokens * (4 * s.vision_hidden ** 2 + 2 * s.vision_hidden * s.vision_intermediate)
                               + 2 * vision_tokens ** 2 * s.vision_hidden)
    tower += patches * 3 * s.patch_size ** 2 * s.vision_hidden  # the patch convolution
    return {
        "lm_head": tokens * s.vocab * s.hidden,
        "decoder linears": tokens * s.layers * (s.hidden * (2 * q + 2 * kv) + 3 * s.hidden * s.intermediate),
        "decoder attention": s.layers * 2 * squares * q,
        "vision tower": images * tower,
        "projector": images * patches * (s.vision_hidden * s.hidden + s.hidden ** 2),
    }


def split(s: Shape, stats: tuple[int, int, int]) -> dict[str, float]:
    """Each part's share of the forward MACs over a mix."""
    parts = macs(s, stats)
    whole = sum(parts.values())
    return {part: value / whole for part, value in parts.items()}


def _error(got: dict, want: dict) -> float:
    # The three parts the comparison rests on: what answer-only logits, padding and checkpointing act on.
    return sum(abs(got[p] - want[p]) / want[p] for p in ("lm_head", "decoder attention", "vision tower"))


def matched_shape(target: Shape, stats: tuple[int, int, int], hidden: int = 128, layers: int = 1,
                  mlp_ratio: int = 32) -> Shape:
    """A shape of `hidden` x `layers` whose split over the mix matches `target`'s: the vocabulary sizes the
    lm_head, the attention width (heads x head_dim) the attention, the CLIP width the tower. A wide MLP
    (`mlp_ratio` x hidden) keeps the projector, whose cost is fixed by the widths, from outgrowing the decoder."""
    want = split(target, stats)
    linear_per_token = hidden * 3 * hidden * mlp_ratio * layers
    best = None
    for head_dim in (8, 16, 32, 64):
        for heads in (1, 2, 4):
            q = heads * head_dim
            per_token = linear_per_token + layers * hidden * 4 * q
            vocab = max(16, round(want["lm_head"] / want["decoder linears"] * per_token / hidden))
            for vision_hidden in range(8, 513, 4):
                shape = Shape(hidden, hidden * mlp_ratio, layers, heads, heads, head_dim, vocab, vision_hidden,
                              4 * vision_hidden, 2, target.image_size, target.patch_size)
                err = _error(split(shape, stats), want)
                if best is None or err < best[0]:
                    best = (err, shape)
    return best[1]


def llava_config(shape: Shape, image_token_index: int, pad_token_id: int):
    """A LlavaConfig with `shape` (LLaVA-1.5's feature layer -2 and default select strategy)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
                              num_hidden_layers=shape.vision_layers, num_attention_heads=2,
                              image_size=shape.image_size, patch_size=shape.patch_size, projection_dim=64)
    text = LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim, vocab_size=shape.vocab,
                       max_position_embeddings=4096, pad_token_id=pad_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                       image_seq_length=(shape.image_size // shape.patch_size) ** 2, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", pad_token_id=pad_token_id,
                       tie_word_embeddings=False)


def split_table(named: dict[str, dict[str, float]]) -> str:
    names = list(named)
    lines = [f"{'forward MACs share':<20}" + "".join(f"{n:>16}" for n in names)]
    for part in PARTS:
        lines.append(f"{part:<20}" + "".join(f"{named[n][part]:16.2%}" for n in names))
    return "\n".join(lines)


def describe(shape: Shape) -> dict:
    return asdict(shape)
