"""The push stage: stage exactly what will be uploaded, check it, then upload it to the Hub in one commit.

The staged copy (run_dir/hub_upload/) is what gets checked and what gets sent, so the local adapter is never
touched by a push, and `hub.dry_run=true` shows the very files a real push would send. The token is read only
from HF_TOKEN or the `hf auth login` cache, handed to HfApi, and never printed, logged or written.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from lora_llava.errors import MissingPathError, UserError
from lora_llava.models.load import PICKLE_SUFFIXES

log = logging.getLogger("lora_llava")

STAGING = "hub_upload"
CARD_KEYS = ("library_name", "pipeline_tag", "tags")


class PushError(UserError, RuntimeError):
    """A push that failed; the message says which step, and that the local files are unchanged."""


def source_folder(cfg, ctx) -> Path:
    """This run's adapter/ (assembled from adapter=PATH without training), or merged/."""
    from lora_llava.export.stage import ensure_adapter_dir, find_metrics
    from lora_llava.models.card import write_model_card

    if cfg.hub.what == "merged":
        # This run's merged/, or the one beside adapter=PATH (an earlier run's merged/ next to its adapter/).
        candidates = [ctx.run_dir / "merged"] + ([Path(cfg.adapter).parent / "merged"] if cfg.adapter else [])
        for merged in candidates:
            if (merged / "config.json").is_file():
                return merged
        raise MissingPathError(f"hub.what=merged but there is no merged model in "
                                f"{' or '.join(map(str, candidates))}: run stages=[export,push] "
                                "export.merge=true (with adapter=PATH when not training)")
    adapter = ensure_adapter_dir(cfg, ctx)
    if not (adapter / "README.md").is_file():
        write_model_card(adapter, cfg, find_metrics(cfg, ctx))
    return adapter


def stage(src: Path, staging: Path) -> list[Path]:
    """A fresh copy of `src` in `staging`; refuses pickles. Returns the staged files."""
    pickles = [p.name for p in src.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise PushError(f"{src} holds pickled files ({', '.join(pickles)}); only safetensors are published")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    return sorted(p for p in staging.rglob("*") if p.is_file())


def list_staged(staging: Path, files: list[Path]) -> str:
    lines = [f"{len(files)} file(s) staged in {staging}:"]
    lines += [f"  {p.relative_to(staging)}  ({p.stat().st_size:,} bytes)" for p in files]
    return "\n".join(lines)


def check_card(folder: Path) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    missing = [key for key in CARD_KEYS if not card.data.to_dict().get(key)]
    if missing:
        raise PushError(f"{folder / 'README.md'}: the model card lacks {', '.join(missing)}")
    if not card.data.base_model:
        log.warning("%s names no base_model (the base is local): pass export.base_model=ORG/NAME so the Hub "
                    "links this upload to its base", folder / "README.md")


def check_adapter(cfg, folder: Path) -> None:
    """The staged adapter loads onto the base with PeftModel.from_pretrained, every tensor in the file lands
    in the model (LoRA and projector) unchanged, and the processor loads."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from lora_llava.models.load import apply_saved_adapter, build_model_and_processor, load_saved_processor

    base, _ = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_saved_adapter(base, folder, cfg.model)
    saved = load_file(folder / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(model)
    if set(saved) != set(loaded):
        raise PushError(f"{folder}: the adapter file and the model disagree on tensors "
                        f"(only in file: {sorted(set(saved) - set(loaded))[:5]}, "
                        f"only in model: {sorted(set(loaded) - set(saved))[:5]})")
    differ = [k for k, v in saved.items() if not torch.equal(v.to(loaded[k].device, loaded[k].dtype),
                                                             loaded[k])]
    if differ:
        raise PushError(f"{folder}: {len(differ)} tensor(s) did not load as saved, e.g. {differ[0]}")
    load_saved_processor(base.config, folder)


def check_merged(folder: Path) -> None:
    from transformers import AutoConfig

    from lora_llava.models.load import load_saved_processor

    report_path = folder / "verification.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if report.get("passed") is not True:
        raise PushError(f"{folder}: no passed check in verification.json; rerun the export with "
                        "export.merge=true export.verify=true before publishing the merged model")
    check_card(folder)
    load_saved_processor(AutoConfig.from_pretrained(folder), folder)


def default_message(cfg, metrics: dict | None) -> str:
    from lora_llava.models.card import base_model_id

    base = base_model_id(cfg) or Path(cfg.model.path).name
    what = "merged model" if cfg.hub.what == "merged" else f"LoRA adapter (r={cfg.peft.r}) and projector"
    accuracy = (metrics or {}).get("accuracy")
    score = f"; {cfg.eval.split} accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
    return f"Upload {what} for {base} (lora_llava recipe {cfg.recipe_name}{score})"


def hub_token() -> str:
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise PushError("HF_HUB_OFFLINE is set: unset it to push (hub.dry_run=true stages and checks "
                        "offline)")
    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                        "(a token is never read from the config)")
    return token


@contextmanager
def request_deadline(seconds: float):
    """Every request huggingface_hub sends in the block (create, info, preupload, commit, ...) waits at most
    `seconds` to connect and for each read and write. Set on the request itself, because huggingface_hub
    passes `timeout=None` (wait forever) explicitly on some calls, which would override a client default."""
    import httpx2
    from huggingface_hub.utils import get_session

    timeout = httpx2.Timeout(seconds).as_dict()

    def hook(request):
        request.extensions["timeout"] = timeout

    hooks = get_session().event_hooks["request"]
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)


def failure(err: Exception, step: str, endpoint: str, timeout: float, token: str) -> PushError:
    import httpx2

    if isinstance(err, httpx2.TimeoutException):
        return PushError(f"push failed while {step}: {endpoint} did not answer within hub.timeout={timeout:g} s "
                         f"({type(err).__name__}); check the network (and HF_ENDPOINT), or raise hub.timeout")
    reason = f"{type(err).__name__}: {err}".replace(token, "<token>")
    return PushError(f"push failed while {step}: {reason}")


def upload(cfg, staging: Path, message: str, token: str):
    """Create the repo (or find it), refuse to publish privately-meant files into a public repo, upload."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    step = f"creating {cfg.hub.repo_id}"
    try:
        with request_deadline(cfg.hub.timeout):
            url = api.create_repo(cfg.hub.repo_id, private=cfg.hub.private, repo_type="model", exist_ok=True)
            step = f"reading the visibility of {cfg.hub.repo_id}"
            private = api.model_info(cfg.hub.repo_id).private
            if cfg.hub.private and not private:
                raise PushError(f"{cfg.hub.repo_id} already exists and is public, but hub.private=true: make it "
                                "private on the Hub, or pass hub.private=false to publish there")
            if private and not cfg.hub.private:
                log.warning("%s already exists and is private; it stays private (change it on the Hub)",
                            cfg.hub.repo_id)
            step = f"uploading {staging} to {cfg.hub.repo_id}"
            commit = api.upload_folder(repo_id=cfg.hub.repo_id, folder_path=staging, repo_type="model",
                                       commit_message=message)
    except PushError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the Hub client becomes one PushError
        raise failure(err, step, api.endpoint, cfg.hub.timeout, token) from None  # its text may quote headers
    return str(url), commit, private


def push_stage(cfg, ctx) -> None:
    token = None if cfg.hub.dry_run else hub_token()  # before any work: a push without a token cannot succeed
    src = source_folder(cfg, ctx)
    staging = ctx.run_dir / STAGING
    files = stage(src, staging)
    print(list_staged(staging, files))
    if cfg.hub.what == "merged":
        check_merged(staging)
    else:
        check_card(staging)
        check_adapter(cfg, staging)
    log.info("staged %s checked: it loads and its card parses", staging)
    if cfg.hub.dry_run:
        print(f"dry run: nothing uploaded; a push would send these files to "
              f"{cfg.hub.repo_id or 'hub.repo_id'}")
        return
    from lora_llava.export.stage import find_metrics

    message = cfg.hub.commit_message or default_message(cfg, find_metrics(cfg, ctx))
    try:
        url, commit, private = upload(cfg, staging, message, token)
    except PushError as err:
        retry = f"stages=[push] adapter={src} hub.repo_id={cfg.hub.repo_id}" if cfg.hub.what == "adapter" \
            else "the push"
        raise PushError(f"{err}. The local folder {src} is unchanged; fix the cause and rerun {retry}") \
            from None
    ctx.extra["hub_url"] = url
    print(f"pushed {len(files)} file(s) to {url} ({'private' if private else 'public'}) in one commit: "
          f"{commit.commit_url}")
