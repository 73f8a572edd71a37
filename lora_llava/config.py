"""Typed schemas for every config group, registered with Hydra's ConfigStore.

YAML files under conf/ and recipes/ hold values only; these dataclasses decide which keys exist and what type
they have, so `peft.rnk=8` or `train.learning_rate=abc` fail at composition, before any model is built.
Key names follow the library each group feeds (peft's `r`, `lora_alpha`; transformers' `learning_rate`; ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

STAGES = ("generate", "validate", "plan", "train", "eval", "compare", "export", "push")
GENERATE_KINDS = ("conversation", "detail", "complex")


@dataclass
class ModelConfig:
    path: str = "tiny"  # Hub id, local directory, or a tiny random build: tiny | tiny-next | tiny-onevision
    revision: Optional[str] = None
    trust_remote_code: bool = False  # only honoured together with a pinned `revision`
    dtype: str = "auto"  # auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU
    attn_implementation: Optional[str] = "sdpa"
    license: Optional[str] = None  # for the model card; read from the checkpoint when known
    seed: int = 0  # tiny model only
    # An adapter records a fingerprint of the base it was trained on; loading it onto another base: refuse | warn
    base_check: str = "refuse"
    # A projector folder written by an align run (<run>/projector): loaded into the base before adapters go on.
    projector: Optional[str] = None
    # Families with anyres tiling: at most this many tiles per image besides the base view (the tile
    # grids allowed are restricted), trading resolution for memory. null: the checkpoint's own grids.
    max_image_tiles: Optional[int] = None


@dataclass
class QuantConfig:
    method: str = "none"  # none | nf4 | int8
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "auto"
    # Modules never quantized besides the family's own list (its vision tower, projector and lm_head).
    skip_modules: list[str] = field(default_factory=list)


@dataclass
class PeftConfig:
    method: str = "lora"  # lora | none (no adapter: the projector alone trains, LLaVA's stage 1; recipe=align)
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # Where target_modules apply: the language model only (LLaVA's choice) or also the vision tower.
    scope: str = "language_model"  # language_model | all
    use_dora: bool = False
    use_rslora: bool = False
    bias: str = "none"
    train_projector: bool = True


@dataclass
class SyntheticConfig:
    n_train: int = 512
    n_eval: int = 64
    image_size: int = 32
    seed: int = 0
    task: str = "qa"  # qa: colour / place questions | caption: brief descriptions (LLaVA's pretraining form)


@dataclass
class ScienceQAConfig:
    # The original release's problems.json: read for the metadata (subject, grade, ...) of LLaVA-JSON samples.
    problems: Optional[str] = None
    pid_splits: Optional[str] = None  # default: pid_splits.json beside problems.json


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | scienceqa | llava_json | jsonl | hf
    path: Optional[str] = None  # file, directory or Hub id, depending on source
    image_root: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = "validation"
    test_split: Optional[str] = "test"
    val_fraction: float = 0.05  # used when the source has no validation split
    prompt_format: str = "llava-1.5"
    system_prompt: Optional[str] = None
    # hf/jsonl: our field -> the dataset's column (null: a column of the field's own name). The keys are listed so
    # that `data.columns.question=prompt` overrides work on Hydra's closed config.
    columns: dict[str, Optional[str]] = field(default_factory=lambda: dict.fromkeys(
        ("id", "image", "question", "answer", "conversations")))
    # split -> local file, instead of `path` (null: none); `+data.data_files.NAME=FILE` adds other split names.
    data_files: dict[str, Optional[str]] = field(default_factory=lambda: dict.fromkeys(
        ("train", "validation", "test")))
    name: Optional[str] = None  # hf/scienceqa: the `datasets` configuration (subset) name
    image_placement: str = "keep"  # keep | front (LLaVA's training moves <image> to the start of its turn)
    max_length: int = 2048
    limit: Optional[int] = None  # first N training samples, for quick runs
    on_error: str = "raise"  # raise | skip
    max_skip_fraction: float = 0.05
    num_workers: int = 0
    image_cache: bool = True  # preprocessed pixels of image files cached on disk across epochs
    image_cache_dir: Optional[str] = None  # default: $LORA_LLAVA_CACHE/pixels (~/.cache/lora_llava/pixels)
    image_cache_gb: float = 20.0  # least recently used entries are evicted beyond this size
    seed: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    scienceqa: ScienceQAConfig = field(default_factory=ScienceQAConfig)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    projector_learning_rate: float = 2e-5
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.03  # < 1: a fraction of all steps (transformers 5 semantics)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    gradient_checkpointing: Optional[bool] = None  # null: the memory planner decides (off when memory allows)
    group_by_modality_length: bool = True  # micro-batches of one modality: text-only rows never pad to images
    length_group_window: int = 1  # >1: also sort by length within N micro-batches (less padding, alike batches)
    supervised_logits_only: bool = True  # lm_head only where a label needs it (no 576 x 32k image logits)
    # Appended to the last user turn of training samples; by default eval's instruction, so that training and
    # inference prompts agree (LLaVA-1.5: "Answer with the option's letter from the given choices directly.").
    answer_suffix: Optional[str] = "${eval.answer_suffix}"
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: Optional[int] = 2
    eval_steps: Optional[int] = None
    # Task accuracy during training: every eval_steps, greedy answers to the validation split scored by
    # eval.scorer (the first eval_metric_limit questions: generation costs far more than the eval loss).
    eval_metric: bool = False
    eval_metric_limit: Optional[int] = 256
    best_by: Optional[str] = None  # accuracy: the run's adapter is the best evaluation's, not the last step's
    patience: Optional[int] = None  # stop after this many task evaluations without a new best
    resume: Optional[str] = None  # auto | PATH
    # Settings that may differ from the checkpoint's when resuming (learning_rate, projector_learning_rate,
    # max_grad_norm, epochs, max_steps); any other change refuses to resume.
    resume_changes: list[str] = field(default_factory=list)
    overwrite: bool = False  # train in a directory holding an earlier run: its files move to replaced-<time>/
    # Stop when the gradient norm is exactly 0, or the loss sits at ln(vocab size) (uniform guessing), for this
    # many optimizer steps in a row; 0: never.
    not_learning_steps: int = 20
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    # GPU levers: off until measured to help on a GPU (docs/benchmarks.md); each is checked before the model loads.
    padding_free: bool = False  # rows packed end to end, no padding; needs model.attn_implementation=flash_attention_*
    use_liger_kernel: bool = False  # Liger's RMSNorm, SwiGLU and RoPE Triton kernels (pip install 'lora_llava[liger]')
    compile: bool = False  # torch.compile each decoder layer of the language model


@dataclass
class JudgeConfig:
    """eval.scorer=judge (LLaVA-Bench style) and ScienceQA arbitration; the endpoint is `endpoint.*`."""

    reference: str = "data"  # data: the sample's answer | endpoint: written by the endpoint once, cached
    send_image: bool = False  # show the judge the image itself (a vision-capable endpoint)
    category_field: str = "kind"  # meta field the relative score is broken down by
    prompts_dir: Optional[str] = None  # a team's own judge prompts (same file names); null: the built-in ones
    max_tokens: int = 512
    # ScienceQA: another system's answers (question_id + text per line); where its answer differs from ours,
    # the judge picks one. Used with eval.scorer=scienceqa.
    arbitrate_with: Optional[str] = None


@dataclass
class EvalConfig:
    scorer: str = "exact"  # exact | scienceqa | qa | judge
    split: str = "test"
    batch_size: int = 8
    max_new_tokens: int = 16
    limit: Optional[int] = None
    predictions: Optional[str] = None  # score an existing predictions file instead of generating
    answer_suffix: Optional[str] = None  # appended to the last user turn at inference (LLaVA's instruction)
    metadata_fields: list[str] = field(default_factory=list)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class EndpointConfig:
    """Any OpenAI-compatible Chat Completions server, shared by `generate` and the judge."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: Optional[str] = "OPENAI_API_KEY"  # the variable holding the key; null: a server without keys
    max_concurrency: int = 4
    timeout: float = 120.0  # seconds per request
    max_retries: int = 6
    backoff_base: float = 2.0  # seconds before the first retry; doubled each time, with jitter
    backoff_max: float = 60.0
    requests_per_minute: Optional[float] = None
    price_per_1k_input: Optional[float] = None
    price_per_1k_output: Optional[float] = None
    temperature: float = 0.2
    seed: Optional[int] = None
    stream: bool = False
    cache_dir: Optional[str] = None  # null: beside the stage's output in the run directory


@dataclass
class GenerateConfig:
    """stages=[generate]: LLaVA instruction data written by `endpoint.*` from a team's annotations."""

    annotations: Optional[str] = None  # JSONL/CSV: image + captions / boxes / text
    coco_captions: Optional[str] = None  # or COCO captions_*.json (+ instances_*.json for boxes)
    coco_instances: Optional[str] = None
    image_root: Optional[str] = None
    kinds: list[str] = field(default_factory=lambda: list(GENERATE_KINDS))
    output: Optional[str] = None  # null: <run dir>/generated/llava.json
    prompts_dir: Optional[str] = None  # a team's own prompts and seeds (same file names); null: built-in
    send_image: bool = False
    max_tokens: int = 1024
    limit: Optional[int] = None  # first N images
    dry_run: bool = False
    forbidden: list[str] = field(default_factory=lambda: ["bounding box", "coordinates", "annotation"])


@dataclass
class CompareConfig:
    """Base model (adapters disabled) vs adapted model on the same questions: eval.split, and optionally a
    general slice from any data source (`compare.general.source=jsonl compare.general.path=...`) to show
    forgetting."""

    limit: Optional[int] = None  # task questions; null: eval.limit
    # source "none": no general slice. (A DataConfig rather than an Optional one: OmegaConf cannot merge an override
    # dict into a null structured node.)
    general: DataConfig = field(default_factory=lambda: DataConfig(source="none"))
    general_split: str = "test"
    general_limit: Optional[int] = 200
    general_scorer: str = "qa"


@dataclass
class ExportConfig:
    merge: bool = False
    # Also write vllm_lora/: the language-model LoRA in the module names vLLM's LLaVA uses. Only possible when
    # the projector was not trained (peft.train_projector=false): vLLM's LoRA cannot carry a projector.
    vllm_lora: bool = False
    dtype: str = "bfloat16"  # dtype the base is reloaded in for merging (never 4-bit): bfloat16 | float16 | float32
    max_shard_size: str = "2GB"
    verify: bool = True
    tolerance: Optional[float] = None  # max |logit difference| merged vs adapter-on-base; null: per dtype
    base_model: Optional[str] = None  # Hub id for the card when model.path is a local copy of a Hub model


@dataclass
class HubConfig:
    repo_id: Optional[str] = None
    private: bool = True
    what: str = "adapter"  # adapter | merged
    dry_run: bool = False  # stage and check what would be uploaded (run_dir/hub_upload), upload nothing
    commit_message: Optional[str] = None
    timeout: float = 60.0  # seconds a Hub request may wait for an answer (connect, each read and write)
    # No token key on purpose: the token comes from HF_TOKEN or the `hf auth login` cache only.


@dataclass
class PlanConfig:
    gpu_memory_gb: Optional[float] = None  # the card to plan for; null: this machine's GPU (24 without one)
    seq_len: Optional[int] = None  # tokens per row to plan for; default: the longest training row (from_data)
    from_data: bool = True  # measure the training rows' token lengths (processor only); false: data.max_length
    answer_tokens: int = 8  # supervised tokens per row (logits memory with train.supervised_logits_only)
    cuda_overhead_gb: float = 1.0  # CUDA context, cuBLAS workspace, allocator fragmentation


@dataclass
class Config:
    recipe_name: str = "custom"
    stages: list[str] = field(default_factory=lambda: ["train", "eval", "export"])
    adapter: Optional[str] = None  # an existing adapter directory, for eval/export/push without training
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into the model card


GROUP_SCHEMAS = {
    "model": ModelConfig,
    "quant": QuantConfig,
    "peft": PeftConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "compare": CompareConfig,
    "export": ExportConfig,
    "hub": HubConfig,
    "plan": PlanConfig,
    "endpoint": EndpointConfig,
    "generate": GenerateConfig,
}


def register_schemas() -> None:
    """Make `lora_llava_schema` (the root) and `<group>/schema` available to defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="lora_llava_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name="schema", node=schema)


def config_dirs():
    """(conf dir, recipes dir): the checkout's top-level folders, or the copies shipped inside the wheel."""
    from importlib import resources
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "conf" / "base.yaml").is_file() and (checkout / "recipes").is_dir():
        return checkout / "conf", checkout / "recipes"
    return Path(str(resources.files("lora_llava._conf"))), Path(str(resources.files("lora_llava._recipes")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in config_dirs()[1].glob("*.yaml"))


def compose(recipe: str, overrides: list[str] | tuple[str, ...] = (), config_dir: str | None = None):
    """The config `python -m lora_llava recipe=NAME OVERRIDES...` would run, for tests and scripts."""
    from pathlib import Path

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    conf_dir, recipes_dir = config_dirs()
    search = [f"file://{conf_dir}"]
    primary = str(Path(config_dir).resolve()) if config_dir else str(recipes_dir)  # Hydra wants it absolute
    if config_dir:
        search.append(f"file://{recipes_dir}")
    with initialize_config_dir(config_dir=primary, version_base="1.3"):
        return hydra_compose(recipe, overrides=[f"hydra.searchpath=[{','.join(search)}]", *overrides])
