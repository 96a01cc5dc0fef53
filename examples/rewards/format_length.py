"""Format and length: a short statement, not more questions (what a base model writes).

    diptych train grpo --name short --reward-fn examples/rewards/format_length.py:short_statement

Half the reward for 3 to 25 words, half for asking nothing back; an empty answer gets 0.
"""


def short_statement(prompts, completions, **kwargs):
    rewards = []
    for completion in completions:
        text = completion[-1]["content"].strip()
        words = len(text.split())
        rewards.append(0.5 * (3 <= words <= 25) + 0.5 * (bool(text) and "?" not in text))
    return rewards
