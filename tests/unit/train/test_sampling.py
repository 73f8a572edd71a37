"""Modality/length-grouped batching: every sample once, one modality per batch, less padding, longest first."""

import random

import pytest
import torch

from lora_llava.data.samples import Sample, Turn
from lora_llava.train.sampling import (
    ModalityLengthGroupedSampler,
    grouped_batches,
    padding_fraction,
    random_batches,
    sample_lengths,
)


def _mix(n=1000, seed=0):
    """ScienceQA-like: about half image rows (576 image tokens + text), half text-only rows."""
    rng = random.Random(seed)
    has_image = [rng.random() < 0.5 for _ in range(n)]
    lengths = [(576 if img else 0) + rng.randint(40, 400) for img in has_image]
    return lengths, has_image


@pytest.mark.parametrize("batch_size", [1, 3, 8, 16])
def test_every_index_once_and_one_modality_per_batch(batch_size):
    lengths, has_image = _mix(997)
    batches = grouped_batches(lengths, has_image, batch_size, torch.Generator().manual_seed(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    mixed = [b for b in batches if len({has_image[i] for i in b}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] is batches[-1] or mixed[0] is batches[-2])
    # Only the leftover batches at the end may be short, so consecutive runs of batch_size are the batches.
    assert all(len(b) == batch_size for b in batches[:-2])


def test_modality_grouping_cuts_padding_and_puts_the_longest_batch_first():
    lengths, has_image = _mix()
    gen = torch.Generator().manual_seed(1)
    grouped = grouped_batches(lengths, has_image, 8, gen)  # modality only (window 1, LLaVA's default)
    plain = random_batches(len(lengths), 8, torch.Generator().manual_seed(1))
    assert padding_fraction(lengths, grouped) < 0.25
    assert padding_fraction(lengths, plain) > 0.35
    assert max(lengths[i] for i in grouped[0]) == max(lengths)


def test_order_is_random_per_epoch_and_the_same_on_every_rank():
    lengths, has_image = _mix(200)
    sampler = ModalityLengthGroupedSampler(lengths, has_image, 4, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second and sorted(first) == sorted(second) == list(range(200))
    other_rank = ModalityLengthGroupedSampler(lengths, has_image, 4, seed=3)
    other_rank.set_epoch(1)
    assert list(other_rank) == second  # depends on seed and epoch only, not on the process's RNG
    torch.manual_seed(123)
    assert list(other_rank) == second


def test_length_window_trades_padding_for_alike_batches():
    lengths, has_image = _mix()
    by_window = {w: padding_fraction(lengths, grouped_batches(lengths, has_image, 8,
                                                              torch.Generator().manual_seed(0), window=w))
                 for w in (1, 4, 50)}
    assert by_window[50] < by_window[4] < by_window[1]


def test_sample_lengths_match_the_collator(tiny_model_and_processor):
    from PIL import Image

    from lora_llava.data.collate import Collator

    _, processor = tiny_model_and_processor
    samples = [Sample("i", [Turn("user", "<image>\nWhat color is the shape?"), Turn("assistant", "red")],
                      [Image.new("RGB", (32, 32))]),
               Sample("t", [Turn("user", "Which of these is a mammal? A. cat B. fish"), Turn("assistant", "A")])]
    lengths = sample_lengths(samples, Collator(processor))
    exact = [len(Collator(processor).encode(s)["input_ids"]) for s in samples]
    assert all(abs(a - b) <= 2 for a, b in zip(lengths, exact)), (lengths, exact)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="lengths"):
        grouped_batches([1, 2, 3], [True], 2)
