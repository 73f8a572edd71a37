"""ScienceQA problems -> (user text, answer text) in the prompt formats LLaVA trained and evaluated with.

`llava-1.5` is the form of LLaVA-1.5's evaluation file `llava_test_CQM-A.json`: the image placeholder first, then
`Context: <hint>` when there is a hint, the question, and one `A. choice` line per option; the answer is the
letter. (At inference LLaVA-1.5 appends "Answer with the option's letter from the given choices directly.",
which is `eval.answer_suffix` in the scienceqa recipe.)

The other formats are those of the original LLaVA's `scripts/convert_sqa_to_llava.py`, named INPUT-OUTPUT
after the ScienceQA paper: Q question, C context (the hint, or "N/A"), M options, L lecture, E explanation (the
problem's `solution`), A answer. E.g. QCM-LEA: "Question ... Context ... Options: (A) x (B) y" in, "<lecture>
<solution> The answer is A." out. Their quirks are kept on purpose, since checkpoints were trained on them:
AL appends the solution and AE the lecture; double spaces are collapsed once; every "Question: " and
"Answer: " is removed (not only the leading one); the image placeholder goes after the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lora_llava.data.samples import IMAGE_PLACEHOLDER
from lora_llava.errors import ConfigError, DataError

LETTERS = "ABCDE"
LLAVA_15 = "llava-1.5"

# Input templates; {q} question, {c} context, {m} options, {l} lecture, {e} solution.
_QC = "Question: {q}\nContext: {c}\n"
INPUTS = {
    "CQM": "Context: {c}\nQuestion: {q}\nOptions: {m}\n",
    "QCM": _QC + "Options: {m}\n",
    "QCML": _QC + "Options: {m}\nBECAUSE: {l}\n",
    "QCME": _QC + "Options: {m}\nBECAUSE: {e}\n",
    "QCMLE": _QC + "Options: {m}\nBECAUSE: {l} {e}\n",
    "QCLM": _QC + "BECAUSE: {l}\nOptions: {m}\n",
    "QCEM": _QC + "BECAUSE: {e}\nOptions: {m}\n",
    "QCLEM": _QC + "BECAUSE: {l} {e}\nOptions: {m}\n",
}
# Output templates; {a} is the answer letter. AL/AE carry the solution/lecture respectively, as in LLaVA.
OUTPUTS = {
    "A": "Answer: The answer is {a}.",
    "AL": "Answer: The answer is {a}. BECAUSE: {e}",
    "AE": "Answer: The answer is {a}. BECAUSE: {l}",
    "ALE": "Answer: The answer is {a}. BECAUSE: {l} {e}",
    "AEL": "Answer: The answer is {a}. BECAUSE: {e} {l}",
    "LA": "Answer: {l} The answer is {a}.",
    "EA": "Answer: {e} The answer is {a}.",
    "LEA": "Answer: {l} {e} The answer is {a}.",
    "ELA": "Answer: {e} {l} The answer is {a}.",
    "LEPA": None,  # LECTURE:/SOLUTION: lines, "###", then "ANSWER: X." (built by _lepa_output)
}
FORMATS = (LLAVA_15, *(f"{i}-{o}" for i in INPUTS for o in OUTPUTS))


@dataclass
class Problem:
    """The fields of a ScienceQA problem the prompts use; `answer` is the index of the right choice."""

    question: str
    choices: list[str]
    answer: int
    hint: str = ""
    lecture: str = ""
    solution: str = ""
    has_image: bool = False

    @property
    def letter(self) -> str:
        return LETTERS[self.answer]


def check_format(name: str) -> None:
    if name not in FORMATS:
        originals = ", ".join(f"{i}-{o}" for i in ("QCM", "CQM") for o in ("A", "EA", "LEA"))
        raise ConfigError(f"data.prompt_format={name!r} is not a ScienceQA prompt format; use {LLAVA_15} "
                         f"(LLaVA-1.5's) or INPUT-OUTPUT with INPUT in {', '.join(INPUTS)} and OUTPUT in "
                         f"{', '.join(OUTPUTS)} (e.g. {originals})")


def render(problem: Problem, fmt: str) -> tuple[str, str]:
    """(user turn text, assistant answer) for `problem` in prompt format `fmt`."""
    check_format(fmt)
    if len(problem.choices) > len(LETTERS) or not 0 <= problem.answer < len(problem.choices):
        raise DataError(f"answer index {problem.answer} does not fit {len(problem.choices)} choices")
    if fmt == LLAVA_15:
        return _llava15(problem), problem.letter
    return _original(problem, *fmt.split("-"))


def _llava15(p: Problem) -> str:
    lines = [IMAGE_PLACEHOLDER] if p.has_image else []
    if p.hint:
        lines.append(f"Context: {p.hint}")
    lines.append(p.question)
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(p.choices)]
    return "\n".join(lines).replace("  ", " ").strip()


def _lepa_output(lecture: str, solution: str, letter: str) -> str:
    out = f"LECTURE: {lecture}\n" if lecture.strip() else ""
    out += f"SOLUTION: {solution}\n" if solution.strip() else ""
    return out + f"###\nANSWER: {letter}."


def _original(p: Problem, input_fmt: str, output_fmt: str) -> tuple[str, str]:
    # LLaVA escapes newlines in lectures/solutions and unescapes them again, so literal "\n" becomes a newline.
    lecture, solution = p.lecture.replace("\\n", "\n"), p.solution.replace("\\n", "\n")
    fields = {"q": p.question, "c": p.hint.strip() or "N/A", "l": lecture, "e": solution, "a": p.letter,
              "m": " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(p.choices))}
    text = INPUTS[input_fmt].format(**fields)
    answer = OUTPUTS[output_fmt].format(**fields) if OUTPUTS[output_fmt] else _lepa_output(
        lecture, solution, p.letter)
    text, answer = _clean(text), _clean(answer)
    if text.startswith("Question: "):
        text = text.replace("Question: ", "")
    if answer.startswith("Answer: "):
        answer = answer.replace("Answer: ", "")
    return (f"{text}\n{IMAGE_PLACEHOLDER}" if p.has_image else text), answer


def _clean(text: str) -> str:
    """LLaVA's clean-up: one pass collapsing double spaces, then a dangling "BECAUSE:" (empty lecture) dropped."""
    text = text.replace("  ", " ").strip()
    if text.endswith("BECAUSE:"):
        text = text.replace("BECAUSE:", "").strip()
    return text


_ANSWER = re.compile(r"^([A-E])$|The answer is ([A-E])\.|ANSWER: ([A-E])\.")


def _split_context(head: str) -> tuple[str, str]:
    """(hint, question) of "Context: hint\nquestion" or "question\nContext: hint" (the hint may span lines)."""
    if head.startswith("Context: "):
        hint, _, question = head[len("Context: "):].rpartition("\n")
        return hint, question.removeprefix("Question: ")
    question, _, hint = head.partition("\nContext: ")
    return hint, question


def _letter_lines(body: str) -> tuple[str, list[str]]:
    """(text before the options, choices) for a body ending in "\nA. x\nB. y..."; a choice may span lines
    (letter closings such as "See you soon,\nJanet"), so options are the last run of consecutive letters."""
    text = f"\n{body}"
    for start in reversed([m.start() for m in re.finditer(r"\nA\. ", text)]):
        parts = re.split(r"\n([B-E])\. ", text[start + len("\nA. "):])
        if parts[1::2] == list(LETTERS[1:len(parts) // 2 + 1]):
            return text[1:start], parts[0::2]
    return body, []


def parse(user_text: str, answer_text: str) -> Problem | None:
    """Best-effort inverse of `render` for LLaVA-JSON files read without problems.json: the choices, answer,
    hint and question of a `llava-1.5` or original-format prompt; None when the text fits neither."""
    letter = _ANSWER.search(answer_text.strip())
    body = user_text.replace(IMAGE_PLACEHOLDER, "").strip()
    if "\nOptions: (A) " in body:  # original formats: "...\nOptions: (A) x (B) y\n[BECAUSE: ...]"
        head, _, options = body.partition("\nOptions: ")
        choices = [c.strip() for c in re.split(r"\(([A-E])\) ", options.split("\n")[0])[2::2]]
    else:  # llava-1.5: "A. choice" lines at the end
        head, choices = _letter_lines(body)
    if not choices or not letter:
        return None
    hint, question = _split_context(head)
    hint = "" if hint.strip() == "N/A" else hint
    answer = LETTERS.index(next(g for g in letter.groups() if g))
    return Problem(question.strip(), choices, answer, hint, has_image=IMAGE_PLACEHOLDER in user_text)
