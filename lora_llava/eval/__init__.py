"""The eval stage: batched greedy generation, scorers and reports, and `predict` for one question."""
