"""Scorers: (samples, outputs, prompts) -> (rows for predictions.jsonl, metrics), chosen by `eval.scorer`.

Every row has id, prompt, output, parsed, gold, correct; every metrics dict has accuracy, correct and n, where
accuracy is exactly correct / n over the rows. `score` adds the breakdown by `eval.metadata_fields`.
"""

from __future__ import annotations

from lora_llava.data.samples import Sample
from lora_llava.errors import ConfigError
from lora_llava.eval.scoring import exact, qa, scienceqa
from lora_llava.eval.scoring.breakdown import by_meta_fields

SCORERS = {"exact": exact.score, "scienceqa": scienceqa.score, "qa": qa.score}


def score(scorer: str, samples: list[Sample], outputs: list[str], prompts: list[str] | None = None,
          metadata_fields=()) -> tuple[list[dict], dict]:
    if scorer not in SCORERS:
        raise ConfigError(f"eval.scorer={scorer!r} is not one of {', '.join(SCORERS)}")
    if len(samples) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(samples)} questions")
    prompts = prompts if prompts is not None else [s.prompt_turns()[-1].text for s in samples]
    rows, metrics = SCORERS[scorer](samples, outputs, prompts)
    if metadata_fields:
        flags = [row["correct"] for row in rows]
        metrics["by_field"] = by_meta_fields(flags, [s.meta for s in samples], metadata_fields)
    return rows, metrics
