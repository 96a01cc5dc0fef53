"""Format and length: one short statement, not more questions (what a base model writes).

    diptych train grpo --reward-fn examples/rewards/format_length.py:short_statement --dry-run
    diptych train grpo --name short --reward-fn examples/rewards/format_length.py:short_statement

Nothing for a question or fewer than 3 words; else a quarter for answering at all and a
quarter each for at most 25 words, for one line, and for ending like a statement (an
answer cut off by the token limit rarely ends on a full stop). The built-in
``--task length`` scores the same way.
"""


def short_statement(prompts, completions, **kwargs):
    rewards = []
    for completion in completions:
        text = completion[-1]["content"].strip()
        words = len(text.split())
        if words < 3 or "?" in text:
            rewards.append(0.0)
            continue
        rewards.append(0.25 + 0.25 * (words <= 25) + 0.25 * ("\n" not in text)
                       + 0.25 * (text[-1] in ".!"))
    return rewards
