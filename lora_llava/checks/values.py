"""Values that need more than a type: choices among names, ranges that can train, stages that exist, and
combinations of keys that cannot work together. All on the composed config, before anything is loaded; each
error names the key."""

from __future__ import annotations

import warnings

from lora_llava.checks.keys import check_known_keys
from lora_llava.config import GENERATE_KINDS, STAGES
from lora_llava.errors import ConfigError

SCORERS = ("exact", "scienceqa", "qa", "judge")


def check_config(cfg) -> None:
    """Checks that need more than a type: no keys beyond the schema, choices among names, ranges. Raises
    ConfigError naming the key (a learning rate of 0 only warns)."""
    check_known_keys(cfg)
    check_choices(cfg)
    check_ranges(cfg)
    if not cfg.stages:
        raise ConfigError(f"stages is empty: nothing to run; choose from {', '.join(STAGES)}, e.g. stages=[train,eval]")
    if cfg.model.trust_remote_code and not cfg.model.revision:
        raise ConfigError("model.trust_remote_code=true needs model.revision pinned to a commit")
    if "push" in cfg.stages and not cfg.hub.dry_run and not cfg.hub.repo_id:
        raise ConfigError("stages has push but hub.repo_id is not set: pass hub.repo_id=ORG/NAME (or hub.dry_run=true)")


def check_choices(cfg) -> None:
    choices = {
        "quant.method": ("none", "nf4", "int8"),
        "peft.method": ("lora", "none"),
        "peft.scope": ("language_model", "all"),
        "data.on_error": ("raise", "skip"),
        "data.image_placement": ("keep", "front"),
        "hub.what": ("adapter", "merged"),
        "export.dtype": ("bfloat16", "float16", "float32"),
        "eval.scorer": SCORERS,
        "model.dtype": ("auto", "bfloat16", "float16", "float32"),
        "model.base_check": ("refuse", "warn"),
    }
    for key, allowed in choices.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage {stage!r}; choose from {', '.join(STAGES)}")


# Keys that must be positive (null allowed where the schema says Optional: it means "not set").
POSITIVE = ("train.batch_size", "train.gradient_accumulation_steps", "train.logging_steps", "train.save_steps",
            "train.save_total_limit", "train.eval_steps", "eval.batch_size", "eval.max_new_tokens", "eval.limit",
            "data.max_length", "data.limit", "peft.r", "peft.lora_alpha", "data.synthetic.n_train",
            "data.synthetic.n_eval", "plan.gpu_memory_gb", "plan.seq_len")
FRACTIONS = ("data.val_fraction", "data.max_skip_fraction", "peft.lora_dropout")  # in [0, 1)
NON_NEGATIVE = ("train.warmup_steps", "train.weight_decay", "train.max_grad_norm", "train.projector_learning_rate",
                "data.image_cache_gb", "plan.cuda_overhead_gb")


def check_ranges(cfg) -> None:
    for key in POSITIVE:
        value = _get(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value} must be a positive number")
    for key in FRACTIONS:
        value = _get(cfg, key)
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value} must be a fraction in [0, 1)")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}={_get(cfg, key)} must not be negative")
    if cfg.export.tolerance is not None and cfg.export.tolerance <= 0:
        raise ConfigError(f"export.tolerance={cfg.export.tolerance} must be positive (or null: per dtype)")
    check_steps(cfg.train)


def check_steps(train) -> None:
    """transformers' conventions: max_steps=-1 means 'train.epochs decide'; anything else must be positive."""
    if train.max_steps == 0 or train.max_steps < -1:
        raise ConfigError(f"train.max_steps={train.max_steps} must be positive, or -1 to let train.epochs decide")
    if train.max_steps == -1 and train.epochs <= 0:
        raise ConfigError(f"train.epochs={train.epochs} must be positive (or set train.max_steps)")
    if train.learning_rate < 0:
        raise ConfigError(f"train.learning_rate={train.learning_rate} must not be negative")
    if train.learning_rate == 0:
        warnings.warn("train.learning_rate=0: the adapters will not change from their initialisation",
                      stacklevel=3)


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_values(cfg) -> None:
    """Every check of the composed config: unknown keys, choices and ranges (check_config), then combinations
    of keys and what the chosen stages need. Raises ConfigError naming the key."""
    check_config(cfg)
    if cfg.data.synthetic.task not in ("qa", "caption"):
        raise ConfigError(f"data.synthetic.task={cfg.data.synthetic.task!r} is not one of qa, caption")
    if cfg.peft.method == "none":
        check_projector_only(cfg)
    if cfg.model.max_image_tiles is not None and cfg.model.max_image_tiles < 1:
        raise ConfigError(f"model.max_image_tiles={cfg.model.max_image_tiles}: give 1 or more tiles, or null")
    check_training_metric(cfg.train, cfg.data)
    if cfg.compare.general_scorer not in SCORERS:
        raise ConfigError(f"compare.general_scorer={cfg.compare.general_scorer!r} is not one of {', '.join(SCORERS)}")
    if "compare" in cfg.stages and "train" not in cfg.stages and not cfg.adapter:
        raise ConfigError("stages has compare but neither train nor adapter=PATH: compare needs an adapter to "
                          "switch off (a merged model has none)")
    if cfg.export.vllm_lora and cfg.peft.train_projector and "export" in cfg.stages:
        raise ConfigError("export.vllm_lora=true is impossible with peft.train_projector=true: vLLM's LoRA "
                          "loading cannot carry a trained projector. Serve the merged folder "
                          "(export.merge=true; `vllm serve <run>/merged`), or train with peft.train_projector=false")
    check_endpoint_use(cfg)


def check_projector_only(cfg) -> None:
    """peft.method=none trains the projector alone (recipe=align); settings that cannot work with it."""
    if not cfg.peft.train_projector:
        raise ConfigError("peft.method=none with peft.train_projector=false leaves nothing to train: "
                          "set peft.train_projector=true (recipe=align does)")
    if cfg.quant.method != "none":
        raise ConfigError(f"peft.method=none with quant.method={cfg.quant.method}: a quantized base trains only "
                          "through adapters; align the projector on the 16-bit base (quant=none)")
    if "push" in cfg.stages and cfg.hub.what == "adapter":
        raise ConfigError("peft.method=none (an align run) has no adapter to push: its output is <run>/projector; "
                          "publish the base with that projector instead (export.merge=true hub.what=merged)")


def check_training_metric(train, data) -> None:
    """train.eval_metric / best_by / patience: what they need, checked before any model loads."""
    if train.best_by not in (None, "accuracy"):
        raise ConfigError(f"train.best_by={train.best_by!r}: choose accuracy (or null: the last step)")
    for key, on in (("best_by", train.best_by), ("patience", train.patience)):
        if on is not None and not train.eval_metric:
            raise ConfigError(f"train.{key} needs the task metric: add train.eval_metric=true")
    if train.eval_metric and not (train.eval_steps and data.eval_split):
        raise ConfigError("train.eval_metric=true needs train.eval_steps=N (how often) and data.eval_split "
                          "(the questions)")
    if train.patience is not None and train.patience < 1:
        raise ConfigError(f"train.patience={train.patience}: give a number of evaluations >= 1, or null")


def uses_endpoint(cfg) -> bool:
    judged = "eval" in cfg.stages and (cfg.eval.scorer == "judge" or bool(cfg.eval.judge.arbitrate_with))
    return ("generate" in cfg.stages and not cfg.generate.dry_run) or judged


def check_endpoint_use(cfg) -> None:
    """The values generate and the judge need, checked before any stage runs (not after hours of training)."""
    bad = [k for k in cfg.generate.kinds if k not in GENERATE_KINDS]
    if bad or not cfg.generate.kinds:
        raise ConfigError(f"generate.kinds={list(cfg.generate.kinds)}: choose one or more of {', '.join(GENERATE_KINDS)}")
    if cfg.eval.judge.reference not in ("data", "endpoint"):
        raise ConfigError(f"eval.judge.reference={cfg.eval.judge.reference!r} is not one of data, endpoint")
    if cfg.endpoint.max_concurrency < 1 or (cfg.endpoint.requests_per_minute or 1) <= 0:
        raise ConfigError("endpoint.max_concurrency must be >= 1 and endpoint.requests_per_minute > 0 (or null)")
    if "generate" in cfg.stages:
        check_generate_inputs(cfg)


def check_generate_inputs(cfg) -> None:
    gen = cfg.generate
    if bool(gen.annotations) == bool(gen.coco_captions):
        raise ConfigError("stages has generate: set generate.annotations=FILE (JSONL/CSV) or "
                         "generate.coco_captions=FILE (COCO captions JSON), one of the two")
    later = [s for s in cfg.stages[cfg.stages.index("generate") + 1:] if s in ("validate", "plan", "train", "eval")]
    if later and not gen.dry_run and (not gen.output or cfg.data.path != gen.output):
        raise ConfigError(f"stages runs {', '.join(later)} after generate: they read data.path, so set "
                         f"generate.output=FILE and data.path=FILE to the same file (now {gen.output} and "
                         f"{cfg.data.path})")
