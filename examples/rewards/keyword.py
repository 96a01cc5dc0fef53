"""A keyword reward: answers that mention a word from a list, early, score higher.

    diptych train grpo --name fruity --prompts-from examples/rewards/fruit_prompts.txt \
        --reward-fn examples/rewards/keyword.py:mentions_fruit --dry-run

1 when a fruit is named in the first ten words, 0.5 when later, 0 when not at all.
"""

import re

FRUITS = {"apple", "apples", "banana", "bananas", "orange", "oranges", "pear", "pears",
          "grape", "grapes", "mango", "mangoes", "cherry", "cherries", "lemon", "lemons"}


def mentions_fruit(prompts, completions, **kwargs):
    rewards = []
    for completion in completions:
        words = re.findall(r"[a-z]+", completion[-1]["content"].lower())
        where = next((i for i, w in enumerate(words) if w in FRUITS), None)
        rewards.append(0.0 if where is None else 1.0 if where < 10 else 0.5)
    return rewards
