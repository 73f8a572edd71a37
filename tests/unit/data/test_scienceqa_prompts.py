"""ScienceQA prompt formats as LLaVA's converter writes them, quirks included; parse inverts llava-1.5 and QCM."""

import pytest

from lora_llava.data.scienceqa_prompts import FORMATS, Problem, check_format, parse, render

P = Problem(question="Which is a mammal?", choices=["frog", "whale"], answer=1, hint="Look  closely.",
            lecture="Mammals have hair.\\nMost give birth.", solution="A whale is a mammal.", has_image=True)
TEXT_ONLY = Problem("Which word is a noun?", ["run", "dog", "blue"], 1)

EXPECTED = [  # (problem, format, user text, answer)
    (P, "llava-1.5", "<image>\nContext: Look closely.\nWhich is a mammal?\nA. frog\nB. whale", "B"),
    (TEXT_ONLY, "llava-1.5", "Which word is a noun?\nA. run\nB. dog\nC. blue", "B"),
    (P, "QCM-A", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "The answer is B."),
    (TEXT_ONLY, "QCM-A", "Which word is a noun?\nContext: N/A\nOptions: (A) run (B) dog (C) blue",
     "The answer is B."),
    # CQM does not start with "Question: ", so LLaVA leaves that label in.
    (P, "CQM-A", "Context: Look closely.\nQuestion: Which is a mammal?\nOptions: (A) frog (B) whale\n<image>",
     "The answer is B."),
    (P, "QCM-LEA", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "Mammals have hair.\nMost give birth. A whale is a mammal. The answer is B."),
    (P, "QCM-EA", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "A whale is a mammal. The answer is B."),
    # AL carries the solution and AE the lecture: LLaVA's naming, kept.
    (P, "QCM-AL", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "The answer is B. BECAUSE: A whale is a mammal."),
    (P, "QCM-AE", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "The answer is B. BECAUSE: Mammals have hair.\nMost give birth."),
    # An empty lecture leaves a dangling BECAUSE:, which LLaVA removes.
    (TEXT_ONLY, "QCM-AE", "Which word is a noun?\nContext: N/A\nOptions: (A) run (B) dog (C) blue",
     "The answer is B."),
    (P, "QCML-A", ("Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\nBECAUSE: Mammals "
                   "have hair.\nMost give birth.\n<image>"), "The answer is B."),
    (P, "QCM-LEPA", "Which is a mammal?\nContext: Look closely.\nOptions: (A) frog (B) whale\n<image>",
     "LECTURE: Mammals have hair.\nMost give birth.\nSOLUTION: A whale is a mammal.\n###\nANSWER: B."),
    (TEXT_ONLY, "QCM-LEPA", "Which word is a noun?\nContext: N/A\nOptions: (A) run (B) dog (C) blue",
     "###\nANSWER: B."),
]


@pytest.mark.parametrize("problem,fmt,text,answer", EXPECTED, ids=[f"{e[1]}-{i}" for i, e in enumerate(EXPECTED)])
def test_render(problem, fmt, text, answer):
    assert render(problem, fmt) == (text, answer)


def test_every_question_label_is_removed_like_llava():
    quoted = Problem("Question: which one?", ["a", "b"], 0)
    assert render(quoted, "QCM-A")[0].startswith("which one?\nContext")


def test_unknown_format_lists_the_choices():
    with pytest.raises(ValueError, match="data.prompt_format='QMC-A'.*llava-1.5.*QCM-LEA"):
        check_format("QMC-A")
    assert len(FORMATS) == 1 + 8 * 10


@pytest.mark.parametrize("fmt", ["llava-1.5", "QCM-A", "CQM-A", "QCM-LEA", "QCM-LEPA", "QCMLE-A"])
def test_parse_recovers_choices_answer_and_hint(fmt):
    multi_line_hint = Problem("Which?", ["x", "y", "z"], 2, "Line one.\nLine two.", "L", "S", True)
    for problem in (multi_line_hint, TEXT_ONLY):
        parsed = parse(*render(problem, fmt))
        assert (parsed.choices, parsed.answer, parsed.has_image) == (problem.choices, problem.answer,
                                                                     problem.has_image)
        assert (parsed.hint, parsed.question) == (problem.hint, problem.question)


def test_parse_returns_none_for_other_text():
    assert parse("Describe the picture.", "A cat.") is None
