"""Open-ended QA scoring: normalised exact match, choice accuracy, breakdown by meta columns."""

import pytest

from lora_llava.data.samples import Sample, Turn
from lora_llava.eval.scoring import score
from lora_llava.eval.scoring.qa import choice_index, normalize


@pytest.mark.parametrize("text,expected", [
    ("The Red circle.", "red circle"),
    ("  a   BLUE, square!  ", "blue square"),
    ("An apple", "apple"),
    ("theatre", "theatre"),           # articles only as whole words
    ("top-left", "topleft"),          # punctuation removed, as SQuAD's normalisation does
    ("", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def qa(sid, answer, **meta):
    return Sample(sid, [Turn("user", "Q?"), Turn("assistant", answer)], [], meta)


def test_exact_match_after_normalisation():
    samples = [qa("1", "red"), qa("2", "top left"), qa("3", "a cat"), qa("4", "dog")]
    rows, m = score("qa", samples, ["Red.", "the top left", "cat", "dogs"])
    assert [r["correct"] for r in rows] == [True, True, True, False]
    assert (m["accuracy"], m["exact_match"], m["n"]) == (0.75, 0.75, 4)
    assert "choice_accuracy" not in m


@pytest.mark.parametrize("output,index", [("Blue", 1), ("B", 1), ("B. blue", 1), ("The answer is C.", 2),
                                          ("purple", None), ("E", None)])
def test_choice_index(output, index):
    assert choice_index(output, ["red", "blue", "green"]) == index


def test_choice_accuracy_only_over_samples_with_choices():
    samples = [qa("1", "blue", choices=["red", "blue"]),
               qa("2", "green", choices=["green", "red"], answer_index=0),
               qa("3", "cat")]
    rows, m = score("qa", samples, ["B", "green.", "cat"])
    # "B" names the right choice but is not the answer text: choice-correct, not an exact match
    assert [r["correct"] for r in rows] == [False, True, True]
    assert [r.get("choice_correct") for r in rows] == [True, True, None]
    assert (m["choice_accuracy"], m["n_with_choices"]) == (1.0, 2)


def test_breakdown_by_meta_columns():
    samples = [qa("1", "x", site="A", kind="count"), qa("2", "x", site="A", kind="color"),
               qa("3", "x", site="B", kind="count")]
    _, m = score("qa", samples, ["x", "y", "x"], metadata_fields=["site", "kind"])
    assert m["by_field"]["site"] == {"A": {"accuracy": 0.5, "correct": 1, "n": 2},
                                     "B": {"accuracy": 1.0, "correct": 1, "n": 1}}
    assert m["by_field"]["kind"]["count"]["accuracy"] == 1.0


def test_unknown_scorer_and_count_mismatch_are_errors():
    with pytest.raises(ValueError, match="eval.scorer='vqa'"):
        score("vqa", [qa("1", "x")], ["x"])
    with pytest.raises(ValueError, match="1 outputs for 2 questions"):
        score("qa", [qa("1", "x"), qa("2", "y")], ["x"])
