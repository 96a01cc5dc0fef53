"""Reverse the order of the words of a sentence, scored word by word.

    diptych train grpo --name reverser --prompts-from examples/rewards/reverse_words.jsonl \
        --reward-fn examples/rewards/reverse_words.py:reversed_words

The prompts file carries the expected answer in a column of its own (``target``); every
column other than ``prompt`` reaches the reward as a keyword list, one entry per answer.
The reward is the share of matching words in order (difflib's ratio over the words).
"""

import difflib
import re


def words(text):
    return re.findall(r"[\w']+", text.lower())


def reversed_words(prompts, completions, target, **kwargs):
    return [difflib.SequenceMatcher(None, words(c[-1]["content"]), words(t)).ratio()
            for c, t in zip(completions, target)]
