"""Talking to an OpenAI-compatible Chat Completions endpoint: the client (retries, rate limit, cache, cost),
instruction data written from a team's annotations (stages=[generate]), and the LLM judge (eval.scorer=judge,
ScienceQA arbitration). A layer below the stages: eval and generate call into it, it imports no stage."""
