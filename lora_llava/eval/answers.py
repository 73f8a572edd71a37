"""Answer questions with a model and score them: the floor that the eval stage, the compare stage and the
train stage's task metric stand on (stages never import each other)."""

from __future__ import annotations

from lora_llava.data.samples import Sample, with_suffix
from lora_llava.eval.generate import generate
from lora_llava.eval.scoring import score


def split_samples(data_cfg, split: str, limit: int | None = None) -> list[Sample]:
    """The first `limit` questions of `split` of the data source `data_cfg` (all of them when None)."""
    from lora_llava.data import load_splits

    splits = load_splits(data_cfg)
    if split not in splits:
        raise ValueError(f"split {split!r}: data.source={data_cfg.source} has splits {', '.join(splits)}")
    samples = splits[split]
    return samples[:limit] if limit else samples


def answer_and_score(model, processor, samples: list[Sample], eval_cfg, data_cfg, scorer: str | None = None,
                     desc: str = "generating") -> tuple[list[dict], dict]:
    """Greedy answers for `samples` (with eval.answer_suffix), scored by `scorer` (default eval.scorer)."""
    prompts = [with_suffix(s, eval_cfg.answer_suffix) for s in samples]
    outputs = generate(model, processor, prompts, eval_cfg.batch_size, eval_cfg.max_new_tokens,
                       data_cfg.system_prompt, data_cfg.image_root, desc=desc)
    return score(scorer or eval_cfg.scorer, samples, outputs, [p.prompt_turns()[-1].text for p in prompts],
                 eval_cfg.metadata_fields)
