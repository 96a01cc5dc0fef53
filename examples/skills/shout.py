"""Write a sentence in capital letters: a skill taught with worked examples, then GRPO.

    diptych train skill --name shout --examples examples/skills/shout_examples.jsonl \
        --prompts-from examples/skills/shout_prompts.jsonl --reward-fn examples/skills/shout.py:shouted

``shout_examples.jsonl`` holds the worked examples (a ``prompt`` and the ``completion``
written out) the warm-up imitates; ``shout_prompts.jsonl`` the prompts GRPO trains and
evaluates on, each with its expected answer in a ``target`` column, which reaches the
reward as a keyword list. The reward is the share of characters in place (difflib's
ratio), so a nearly right answer earns nearly full marks.
"""

import difflib


def shouted(prompts, completions, target, **kwargs):
    return [difflib.SequenceMatcher(None, c[-1]["content"].strip(), t, autojunk=False).ratio()
            for c, t in zip(completions, target)]
