"""The adapter's README.md model card: Hub metadata in YAML front matter, the scores, how to load it.

The front matter only names things that exist on the Hub: `base_model` and `datasets` are Hub ids or absent.
A local base (a directory, or the tiny model built in a cache) is described in the text instead, because a
path on the training machine means nothing to the people who download the adapter (`export.base_model`
names the Hub id when the local directory is a copy of one).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lora_llava.models.tiny import is_tiny

log = logging.getLogger("lora_llava")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GENERIC_SOURCES = ("hf", "jsonl", "llava_json")  # formats, not datasets: the tag comes from the data itself


def is_hub_id(name: str | None) -> bool:
    """`org/name` that is not a local path (a directory named like `org/name` is a path)."""
    return bool(name) and bool(HUB_ID.match(name)) and not Path(name).exists()


def base_model_id(cfg) -> str | None:
    """export.base_model, else model.path when it is a Hub id; None for a local base."""
    if cfg.export.base_model:
        return cfg.export.base_model
    return cfg.model.path if is_hub_id(cfg.model.path) else None


def dataset_ids(data_cfg) -> list[str]:
    return [data_cfg.path] if data_cfg.source in ("hf", "scienceqa") and is_hub_id(data_cfg.path) else []


def dataset_tag(cfg) -> str:
    if cfg.data.source not in GENERIC_SOURCES:
        return cfg.data.source.replace("_", "-")
    if is_hub_id(cfg.data.path):
        return cfg.data.path.split("/")[-1].lower()
    return cfg.recipe_name.replace("_", "-")


def base_license(cfg) -> str | None:
    """model.license, else the `license` in the base's own model card (local README.md or the Hub's)."""
    if cfg.model.license:
        return cfg.model.license
    source = base_model_id(cfg) or cfg.model.path
    try:
        from huggingface_hub import ModelCard

        card_path = Path(source) / "README.md"
        card = ModelCard.load(card_path if card_path.is_file() else source)
        return card.data.license
    except Exception as err:  # noqa: BLE001 - no card, offline, private: the card then says the licence is unknown
        log.warning("licence of %s unknown (%s); set model.license for the model card",
                    source, type(err).__name__)
        return None


def card_metadata(cfg, merged: bool = False) -> dict:
    method = ["projector-alignment"] if cfg.peft.method == "none" else [
        "qlora" if cfg.quant.method == "nf4" else "lora", "peft"]
    tags = ["llava", *method, "lora_llava", dataset_tag(cfg)]
    if merged:
        tags.append("merged")
    meta = {}
    if base_model_id(cfg):
        meta["base_model"] = base_model_id(cfg)
    library = "transformers" if merged else "peft"
    meta.update({"library_name": library, "pipeline_tag": "image-text-to-text", "tags": tags})
    if license_ := base_license(cfg):
        meta["license"] = license_
    if datasets := dataset_ids(cfg.data):
        meta["datasets"] = datasets
    return meta


def flat_metrics(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested breakdowns (by_subject: {NAT: ...}) as `by_subject / NAT` rows."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        rows += flat_metrics(value, f"{name} / ") if isinstance(value, dict) else [(name, value)]
    return rows


def evaluation_section(cfg, metrics: dict | None) -> list[str]:
    if not metrics:
        return ["## Evaluation", "", "No evaluation was run with this model (the `eval` stage adds one).", ""]
    lines = ["## Evaluation", "", (f"Greedy decoding on the `{cfg.eval.split}` split of {dataset_tag(cfg)} "
             f"(`eval.scorer={cfg.eval.scorer}`)."), "", "| metric | value |", "|---|---|"]
    rows = flat_metrics(metrics)
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows]
    return lines + [""]


def describe_base(cfg) -> str:
    hub_id = base_model_id(cfg)
    revision = f" at revision `{cfg.model.revision}`" if cfg.model.revision else ""
    if hub_id:
        return f"[{hub_id}](https://huggingface.co/{hub_id}){revision}"
    if is_tiny(cfg.model.path):
        return ("a tiny random model that lora_llava builds locally "
                f"(`model.path={cfg.model.path} model.seed={cfg.model.seed}`; "
                "`lora_llava.models.tiny.tiny_checkpoint(seed, name)` rebuilds it anywhere); it is not on the Hub")
    return f"a local checkpoint (`{Path(cfg.model.path).name}`){revision}, not named on the Hub"


def align_section(cfg) -> list[str]:
    """An align run (peft.method=none): the projector alone was trained, as in LLaVA's stage 1."""
    return ["## Training", "",
            f"- base model: {describe_base(cfg)}",
            ("- method: projector alignment (LLaVA's stage 1): the multimodal projector alone trained on "
             "image-caption data; language model and vision tower frozen, no adapter"),
            (f"- learning rate {cfg.train.projector_learning_rate:g}, {cfg.train.epochs:g} epoch(s), "
             f"recipe `{cfg.recipe_name}`"), ""]


def training_section(cfg) -> list[str]:
    p = cfg.peft
    if p.method == "none":
        return align_section(cfg)
    method = "QLoRA (4-bit NF4 base)" if cfg.quant.method == "nf4" else (
        "LoRA on an 8-bit base" if cfg.quant.method == "int8" else "LoRA")
    variants = [name for name, on in (("DoRA", p.use_dora), ("rsLoRA", p.use_rslora)) if on]
    scope = "language model only" if p.scope == "language_model" else "language model and vision tower"
    projector = "trained and saved in this adapter" if p.train_projector else "frozen"
    if cfg.model.projector:
        projector += f", starting from an aligned projector (`model.projector={cfg.model.projector}`)"
    return ["## Training", "",
            f"- base model: {describe_base(cfg)}",
            (f"- method: {method}{' with ' + ', '.join(variants) if variants else ''}; r={p.r}, "
             f"lora_alpha={p.lora_alpha}, lora_dropout={p.lora_dropout}"),
            f"- target modules: {', '.join(p.target_modules)} ({scope})",
            f"- multimodal projector: {projector}",
            (f"- learning rate {cfg.train.learning_rate:g} (projector {cfg.train.projector_learning_rate:g}), "
             f"{cfg.train.epochs:g} epoch(s), recipe `{cfg.recipe_name}`"), ""]


def load_merged_section(cfg) -> list[str]:
    where = cfg.hub.repo_id or "path/to/merged"
    return ["## Load it", "", "```python",
            "from transformers import AutoProcessor, AutoModelForImageTextToText", "",
            f'model = AutoModelForImageTextToText.from_pretrained("{where}", dtype="auto")',
            f'processor = AutoProcessor.from_pretrained("{where}")', "```", "",
            merged_check(cfg), ""]


def merged_check(cfg) -> str:
    if cfg.peft.method == "none":
        return (f"The aligned projector was loaded into the base in {cfg.export.dtype}; verification.json "
                "records the check of this model's logits against that model before saving.")
    return (f"The adapter was merged into the base in {cfg.export.dtype}; verification.json records the "
            "check of this model's logits against the adapter applied to the base.")


def load_section(cfg) -> list[str]:
    where = cfg.hub.repo_id or "path/to/adapter"
    hub_id = base_model_id(cfg)
    if hub_id:
        base = [f'base = AutoModelForImageTextToText.from_pretrained("{hub_id}", dtype=torch.bfloat16)']
    elif is_tiny(cfg.model.path):
        base = ["from lora_llava.models.tiny import tiny_checkpoint",
                ("base = AutoModelForImageTextToText.from_pretrained("
                 f"tiny_checkpoint({cfg.model.seed}, {cfg.model.path!r}))")]
    else:
        base = ['base = AutoModelForImageTextToText.from_pretrained("path/to/base", dtype=torch.bfloat16)']
    return ["## Load it", "", "```python", "import torch", "from peft import PeftModel",
            "from transformers import AutoProcessor, AutoModelForImageTextToText", "", *base,
            f'model = PeftModel.from_pretrained(base, "{where}")  # LoRA weights and the trained projector',
            f'processor = AutoProcessor.from_pretrained("{where}")', "```", "",
            ("`model.merge_and_unload()` gives the plain base model class; merge into a 16-bit "
             "base, never a 4-bit one (`python -m lora_llava ... stages=[export] export.merge=true "
             "adapter=PATH` does it and checks the result)."), ""]


def render_card(cfg, metrics: dict | None = None, merged: bool = False, comparison: str | None = None) -> str:
    """`comparison`: markdown of base vs adapted (the compare stage's table), placed after the evaluation."""
    import yaml

    kind = "merged model" if merged else "adapter"
    title = f"# {cfg.hub.repo_id.split('/')[-1] if cfg.hub.repo_id else f'{cfg.recipe_name} {kind}'}"
    intro = ("A LoRA adapter for a LLaVA vision-language model: adapters on the language model, with the "
             "multimodal projector trained and saved alongside. Made with lora_llava.")
    if merged:
        intro = ("A LLaVA vision-language model: a LoRA adapter and its trained projector merged into the "
                 "base, loadable without peft. Made with lora_llava.")
    if merged and cfg.peft.method == "none":
        intro = ("A LLaVA vision-language model: the base with a multimodal projector aligned on image-caption "
                 "data (LLaVA's stage 1), a plain checkpoint. Made with lora_llava.")
    loading = load_merged_section(cfg) if merged else load_section(cfg)
    compared = [comparison.rstrip(), ""] if comparison else []
    body = [title, "", intro, "", *training_section(cfg), *evaluation_section(cfg, metrics), *compared, *loading]
    return "---\n" + yaml.safe_dump(card_metadata(cfg, merged), sort_keys=False) + "---\n\n" + "\n".join(body)


def write_model_card(out_dir: Path, cfg, metrics: dict | None = None, merged: bool = False,
                     comparison: str | None = None) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_card(cfg, metrics, merged, comparison))
    return path
