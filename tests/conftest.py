"""Shared fixtures: offline Hub, a per-session cache for the tiny model, one smoke training run reused by
every test that needs a trained adapter, and the path to ../shared/data (tests using it skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    os.environ["LORA_LLAVA_CACHE"] = str(tmp_path_factory.mktemp("lora_llava_cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def smoke_config(*overrides: str):
    from lora_llava.config import compose

    return compose("smoke", ["train.report_to=[]", *overrides])


@pytest.fixture(scope="session")
def trained_smoke(tmp_path_factory):
    """The smoke recipe's train + eval + export, run once per session. Returns the RunContext."""
    from lora_llava.run import run

    cfg = smoke_config()
    return run(cfg, tmp_path_factory.mktemp("smoke_run"))


@pytest.fixture(scope="session")
def tiny_model_and_processor():
    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config()
    return build_model_and_processor(cfg.model, cfg.quant)
