"""The answer-only logits loss equals the model's full-logits loss, in value and in gradient."""

import copy

import pytest
import torch
from PIL import Image

from lora_llava.data.collate import ANSWER_POSITIONS, Collator, answer_positions
from lora_llava.data.samples import Sample, Turn
from lora_llava.train.loss import supervised_logits, supervised_positions, token_loss


def _samples():
    return [
        Sample("a", [Turn("user", "<image>\nWhat color is the shape?"), Turn("assistant", "red")],
               [Image.new("RGB", (32, 32), "red")]),
        Sample("b", [Turn("user", "Where is the shape?"), Turn("assistant", "top left"),
                     Turn("user", "And its color?"), Turn("assistant", "blue")]),
        Sample("c", [Turn("user", "<image>\nWhat is in the image?"), Turn("assistant", "a green square")],
               [Image.new("RGB", (40, 24), "green")]),
    ]


def _batch(processor):
    return Collator(processor)(_samples())


def test_supervised_positions_are_the_ones_before_each_label():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    keep = supervised_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, False, False, False, False]]


def test_answer_positions_index_each_rows_supervised_positions_padded_with_the_last_column():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100], [-100] * 5])
    assert answer_positions(labels).tolist() == [[1, 2], [0, 4], [4, 4]]


def test_the_collators_positions_give_the_same_loss(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    samples = _samples()
    with_positions = Collator(processor, with_answer_positions=True)(samples)
    assert with_positions[ANSWER_POSITIONS].tolist() == answer_positions(with_positions["labels"]).tolist()
    with torch.no_grad():
        ours = token_loss(*supervised_logits(model, with_positions))
        plain = token_loss(*supervised_logits(model, Collator(processor)(samples)))
        full = model(**Collator(processor)(samples)).loss
    torch.testing.assert_close(ours, plain)
    torch.testing.assert_close(ours, full, rtol=1e-6, atol=1e-6)


def test_loss_and_gradients_equal_the_full_logits_loss(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model = copy.deepcopy(model).train()
    batch = _batch(processor)

    full = model(**batch).loss
    full.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    logits, targets = supervised_logits(model, batch)
    ours = token_loss(logits, targets)
    ours.backward()
    # 3 rows x the most answer tokens in a row; the padding of shorter rows targets -100 and counts for nothing.
    assert logits.shape == (3 * max((batch["labels"][:, 1:] != -100).sum(1)), model.config.text_config.vocab_size)
    assert int((targets != -100).sum()) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(ours, full, rtol=1e-6, atol=1e-6)
    params = dict(model.named_parameters())
    for name, grad in full_grads.items():
        torch.testing.assert_close(params[name].grad, grad, rtol=1e-5, atol=1e-7, msg=f"gradient of {name}")


def test_num_items_in_batch_sets_the_denominator(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    with torch.no_grad():
        logits, targets = supervised_logits(model, _batch(processor))
    n = int((targets != -100).sum())
    torch.testing.assert_close(token_loss(logits, targets, num_items_in_batch=2 * n), token_loss(logits, targets) / 2)


@pytest.fixture(scope="module")
def smoke_trainer(tmp_path_factory, tiny_model_and_processor):
    from lora_llava.data import load_splits
    from lora_llava.models.adapters import apply_adapters
    from lora_llava.train.stage import build_trainer
    from tests.conftest import smoke_config

    cfg = smoke_config("data.synthetic.n_train=16", "data.synthetic.n_eval=4")
    model, processor = tiny_model_and_processor
    model = apply_adapters(copy.deepcopy(model), cfg.peft, False, False)
    splits = load_splits(cfg.data)
    return build_trainer(cfg, model, processor, splits, tmp_path_factory.mktemp("loss"), torch.float32)


def test_trainer_loss_matches_trl_fused_head_loss(smoke_trainer):
    """LlavaSFTTrainer with the lever on and off (TRL's own chunked log-prob head) gives the same loss."""
    trainer = smoke_trainer
    trainer.model.eval()  # no LoRA dropout: both forwards must see the same network
    batch = trainer.data_collator([{"sample_index": i} for i in range(4)])
    batch.pop("sample_ids", None)
    assert trainer.supervised_logits_only, "train.supervised_logits_only is on by default"
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(9))
        trainer.supervised_logits_only = False
        try:
            trl = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(9))
        finally:
            trainer.supervised_logits_only = True
    torch.testing.assert_close(ours, trl, rtol=1e-5, atol=1e-6)
