"""What the train stage feeds the trainer: the answer instruction of eval, and data checked before weights load."""

import pytest

from lora_llava.data.samples import SampleError
from lora_llava.models.load import load_processor
from lora_llava.train.stage import prepare_splits, train
from tests.conftest import smoke_config


def test_training_prompts_carry_the_eval_instruction(tmp_path):
    cfg = smoke_config("eval.answer_suffix='Answer with one word.'", "data.synthetic.n_train=8",
                       "data.synthetic.n_eval=4")
    assert cfg.train.answer_suffix == "Answer with one word."  # follows eval's by default
    splits, _ = prepare_splits(cfg, load_processor(cfg.model), tmp_path)
    for name in ("train", "validation"):
        assert all(s.prompt_turns()[-1].text.endswith("\nAnswer with one word.") for s in splits[name])
        assert all(s.turns[-1].role == "assistant" for s in splits[name])
    off = smoke_config("eval.answer_suffix='Answer with one word.'", "train.answer_suffix=null",
                       "data.synthetic.n_train=8")
    assert not any("Answer with" in s.turns[0].text for s in prepare_splits(off, load_processor(off.model),
                                                                             tmp_path)[0]["train"])


def test_bad_data_stops_before_the_model_loads(tmp_path, monkeypatch):
    import lora_llava.train.stage as train_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(train_module, "build_model_and_processor", no_model)
    cfg = smoke_config("data.max_length=10", "train.report_to=[]")
    with pytest.raises(SampleError, match="exceed data.max_length=10"):
        train(cfg, tmp_path)
