"""The one internal sample form every data source produces: conversation turns plus the images they refer to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lora_llava.errors import DataError

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("user", "assistant")


class SampleError(DataError):
    """A sample that cannot be used; the message names the sample, the file and the reason."""

    def __init__(self, sample_id: str, reason: str, path: str | None = None):
        self.sample_id, self.reason, self.path = sample_id, reason, path
        where = f" ({path})" if path else ""
        super().__init__(f"sample {sample_id!r}{where}: {reason}")


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str  # user turns may hold IMAGE_PLACEHOLDER where an image goes


@dataclass
class Sample:
    id: str
    turns: list[Turn]
    # One entry per IMAGE_PLACEHOLDER, in order: a path (str) or an already decoded PIL image.
    images: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The reference answer: the text of the last assistant turn."""
        return self.turns[-1].text if self.turns and self.turns[-1].role == "assistant" else ""

    def prompt_turns(self) -> list[Turn]:
        """The turns a model sees at inference: everything before the last assistant turn."""
        return self.turns[:-1] if self.turns and self.turns[-1].role == "assistant" else list(self.turns)

    def check(self) -> None:
        """Structural checks that need no file access; raises SampleError."""
        if not self.turns:
            raise SampleError(self.id, "no conversation turns")
        for i, turn in enumerate(self.turns):
            if turn.role not in ROLES:
                raise SampleError(self.id, f"turn {i} has unknown role {turn.role!r} (expected user/assistant)")
            if turn.role == "user" and not turn.text.strip():
                raise SampleError(self.id, f"turn {i} is an empty user turn (no question, no image)")
        if self.turns[0].role != "user":
            raise SampleError(self.id, "no user turn before the first answer (a conversation starts with the user)")
        if self.turns[-1].role != "assistant" or not self.turns[-1].text.strip():
            raise SampleError(self.id, "empty or missing answer (the last turn must be a non-empty assistant turn)")
        tags = sum(t.text.count(IMAGE_PLACEHOLDER) for t in self.turns)
        if tags != len(self.images):
            raise SampleError(self.id, f"{tags} {IMAGE_PLACEHOLDER} tag(s) but {len(self.images)} image(s)")


def with_suffix(sample: Sample, suffix: str | None) -> Sample:
    """The sample with `suffix` appended to its last user turn (LLaVA's answer-format instruction)."""
    turns = list(sample.prompt_turns())
    if not suffix or not turns or turns[-1].role != "user" or not turns[-1].text.strip():
        return sample  # no question to append to: screening rejects the sample, naming it
    turns[-1] = Turn(turns[-1].role, f"{turns[-1].text}\n{suffix}")
    return Sample(sample.id, turns + sample.turns[len(turns):], sample.images, sample.meta)
