"""A rubric judge as a reward, inside a reward file: for rubrics that need code around them.

    diptych train grpo --name polite --reward-fn examples/rewards/judge.py:polite_and_short

For a plain rubric you do not need a file: ``--judge "The answer is polite."`` does the
same with the base model as the judge (``--judge-model FILE.gguf`` for another local
GGUF). Here the judge's P(yes) is combined with a length limit. The judge loads once, on
the first call, in the job's process.
"""

from diptych.models.catalog import bundled_model_path
from diptych.models.judge import Judge

_judge = None


def polite_and_short(prompts, completions, **kwargs):
    global _judge
    if _judge is None:
        _judge = Judge(bundled_model_path(), "The answer is polite and helpful.")
    rewards = []
    for prompt, completion in zip(prompts, completions):
        text = completion[-1]["content"]
        rewards.append(_judge.score(prompt, text) * (len(text.split()) <= 30))
    return rewards
