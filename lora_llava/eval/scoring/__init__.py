"""Scorers: (samples, outputs, prompts) -> (rows for predictions.jsonl, metrics), chosen by `eval.scorer`.

Every row has id, prompt, output, parsed, gold, correct; every metrics dict of the accuracy scorers has
accuracy, correct and n, where accuracy is exactly correct / n over the rows. `score` adds the breakdown by
`eval.metadata_fields`. `judge` (an LLM judge on an OpenAI-compatible endpoint, endpoint/judge.py) reports a
relative score instead, with `correct` None in its rows; `build_scorer` gives it its endpoint and folder.
"""

from __future__ import annotations

from lora_llava.data.samples import Sample
from lora_llava.errors import ConfigError
from lora_llava.eval.scoring import exact, qa, scienceqa
from lora_llava.eval.scoring.breakdown import by_meta_fields

SCORERS = {"exact": exact.score, "scienceqa": scienceqa.score, "qa": qa.score}
NEEDS_ENDPOINT = ("judge",)


def build_scorer(eval_cfg, endpoint_cfg, eval_dir, image_root):
    """The scorer `eval.scorer` names; the judge is built around `endpoint.*` and writes its cache to eval_dir."""
    if eval_cfg.scorer == "judge":
        from lora_llava.endpoint.judge import judge_scorer

        return judge_scorer(endpoint_cfg, eval_cfg.judge, eval_dir, image_root)
    return eval_cfg.scorer


def score(scorer, samples: list[Sample], outputs: list[str], prompts: list[str] | None = None,
          metadata_fields=()) -> tuple[list[dict], dict]:
    if not callable(scorer) and scorer not in SCORERS:
        raise ConfigError(f"eval.scorer={scorer!r} is not one of {', '.join(SCORERS)}")
    if len(samples) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(samples)} questions")
    prompts = prompts if prompts is not None else [s.prompt_turns()[-1].text for s in samples]
    rows, metrics = (scorer if callable(scorer) else SCORERS[scorer])(samples, outputs, prompts)
    if metadata_fields and "accuracy" in metrics:
        flags = [row["correct"] for row in rows]
        metrics["by_field"] = by_meta_fields(flags, [s.meta for s in samples], metadata_fields)
    return rows, metrics
