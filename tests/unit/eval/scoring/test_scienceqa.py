"""ScienceQA scoring: LLaVA-1.5's answer extraction case by case; the breakdown on hand-built samples."""

import pytest

from lora_llava.data.samples import Sample, Turn
from lora_llava.eval.scoring import score
from lora_llava.eval.scoring.scienceqa import parse_answer

PARSE_CASES = [
    ("B", "B"),                                       # the whole output is a letter
    ("B. apostrophe", "B"),                           # starts with "X. "
    ("The answer is C.", "C"),                        # LLaVA's sentence
    ("The answer is A. BECAUSE: a magnet attracts iron.", "A"),  # ScienceQA's chain-of-thought form
    ("Looking at the map, The answer is D.", "D"),    # anywhere in the output
    ("The answer is B!", "B"),                        # LLaVA's pattern takes any character after the letter
    ("The answer is A. No, the answer is B. The answer is B.", None),  # more than one: FAILED
    ("The answer is B", None),                        # nothing after the letter: the pattern needs one
    ("b", None),                                      # no case folding
    (" B", None),                                     # no stripping
    ("B.", None),                                     # a full stop but no space
    ("AB", None),                                     # not a letter of the list
    ("", None),
    ("apostrophe", None),
    ("F", None),
    ("The answer is F.", "F"),                        # parsed, but beyond any choices: wrong (see below)
]


@pytest.mark.parametrize("output,letter", PARSE_CASES)
def test_parse_answer_as_llava(output, letter):
    assert parse_answer(output) == letter


def sqa(pid, answer_index, n_choices=4, hint="", image=False, subject=None, grade=None):
    meta = {"pid": pid, "choices": [f"choice {i}" for i in range(n_choices)], "answer_index": answer_index,
            "answer_letter": "ABCDE"[answer_index], "hint": hint, "has_image": image}
    if subject:
        meta["subject"] = subject
    if grade:
        meta["grade"] = grade
    question = ("<image>\n" if image else "") + "Which one?"
    return Sample(pid, [Turn("user", question), Turn("assistant", "ABCDE"[answer_index])],
                  ["img.png"] if image else [], meta)


def test_a_letter_beyond_the_choices_is_wrong_but_parsed():
    samples = [sqa("1", 2, n_choices=3), sqa("2", 0, n_choices=2)]
    rows, metrics = score("scienceqa", samples, ["The answer is E.", "C"])
    assert [r["parsed"] for r in rows] == ["E", "C"]
    assert [r["correct"] for r in rows] == [False, False]
    assert metrics["unparsed"] == 0


def test_rows_carry_prompt_output_parsed_gold_correct():
    rows, _ = score("scienceqa", [sqa("7", 1)], ["B. choice 1"], ["the prompt"])
    assert rows == [{"id": "7", "prompt": "the prompt", "output": "B. choice 1", "parsed": "B", "gold": "B",
                     "correct": True}]


def test_breakdown_by_subject_context_and_grade():
    samples = [
        sqa("1", 0, hint="a passage", image=True, subject="natural science", grade="grade3"),  # TXT+IMG
        sqa("2", 1, hint="a passage", subject="social science", grade="grade8"),                # TXT
        sqa("3", 2, image=True, subject="natural science", grade="grade10"),                   # IMG
        sqa("4", 3, subject="language science", grade="grade1"),                               # NO
        sqa("5", 0),  # NO, and no subject or grade
    ]
    outputs = ["A", "The answer is B.", "A", "nonsense", "A"]
    rows, m = score("scienceqa", samples, outputs)
    assert [r["correct"] for r in rows] == [True, True, False, False, True]
    assert (m["accuracy"], m["correct"], m["n"], m["unparsed"]) == (0.6, 3, 5, 1)
    assert {k: (v["correct"], v["n"]) for k, v in m["by_subject"].items()} == {
        "NAT": (1, 2), "SOC": (1, 1), "LAN": (0, 1)}
    # TXT and IMG overlap (question 1 is in both); NO is neither, as in ScienceQA's evaluate_acc.py
    assert {k: (v["correct"], v["n"]) for k, v in m["by_context"].items()} == {
        "TXT": (2, 2), "IMG": (1, 2), "NO": (1, 2)}
    assert {k: (v["correct"], v["n"]) for k, v in m["by_grade"].items()} == {"G1-6": (1, 2), "G7-12": (1, 2)}
    assert m["by_context"]["NO"]["accuracy"] == 0.5


def test_without_problems_metadata_only_context_is_reported():
    samples = [sqa("1", 0, image=True), sqa("2", 1, hint="text")]
    _, m = score("scienceqa", samples, ["A", "A"])
    assert m["by_subject"] == {} and m["by_grade"] == {}
    assert set(m["by_context"]) == {"TXT", "IMG"}


def test_gold_from_the_answer_turn_when_meta_lacks_it():
    sample = Sample("9", [Turn("user", "Q?\nA. x\nB. y"), Turn("assistant", "B")])
    rows, _ = score("scienceqa", [sample], ["B"])
    assert rows[0]["correct"] and rows[0]["gold"] == "B"


def test_a_free_form_answer_is_an_error_naming_the_sample():
    sample = Sample("q-17", [Turn("user", "What colour?"), Turn("assistant", "red")])
    with pytest.raises(ValueError, match="q-17.*eval.scorer=qa"):
        score("scienceqa", [sample], ["red"])


def test_metadata_fields_add_a_breakdown_for_any_scorer():
    samples = [sqa("1", 0), sqa("2", 0), sqa("3", 0)]
    samples[0].meta["topic"] = samples[1].meta["topic"] = "magnets"
    _, m = score("scienceqa", samples, ["A", "B", "A"], metadata_fields=["topic"])
    assert m["by_field"]["topic"] == {"magnets": {"accuracy": 0.5, "correct": 1, "n": 2},
                                      "(missing)": {"accuracy": 1.0, "correct": 1, "n": 1}}


def test_an_unknown_hint_places_a_question_in_neither_txt_nor_no():
    samples = [sqa("1", 0, image=True), sqa("2", 0), sqa("3", 0, hint="text", subject="social science")]
    for s in samples[:2]:
        del s.meta["hint"]
    _, m = score("scienceqa", samples, ["A", "A", "A"])
    assert {k: v["n"] for k, v in m["by_context"].items()} == {"TXT": 1, "IMG": 1}
    assert m["known"] == {"subject": 1, "grade": 0, "hint": 1}
