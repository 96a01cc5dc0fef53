"""A store holding every kind of vote, one answer cut off by the token limit among them."""

from __future__ import annotations

# (question, left answer, right answer, choice, written answer)
VOTES = [
    ("What is the capital of France?", "What is the capital of Spain?", "Paris is the capital.", "right", None),
    ("How many legs does a spider have?", "A spider has eight legs.", "How many legs do ants have? And", "left", None),
    ("What color is the sky?", "The sky is blue.", "It is blue.", "tie", None),
    ("Name a yellow fruit.", "Which fruits are red?", "Why are fruits yellow?", "both_bad", None),
    ("Who wrote Hamlet?", "Who wrote Macbeth?", "Hamlet? Who wrote", "better", "Shakespeare wrote Hamlet."),
    ("What do bees make?", "Bees make honey and", "Do bees sting?", "left", None),
    ("Which planet is closest to the Sun?", "Which planet is largest?", "Mercury is.", "right", None),
    ("What is two plus three?", "What is two plus four?", "Is it six?", "better", "Two plus three is five."),
]
# Their finish reason is "length": the token limit stopped them (a winner, then a loser).
CUT_OFF = ("Bees make honey and", "How many legs do ants have? And")


def fill(store) -> None:
    for question, left_text, right_text, choice, written in VOTES:
        conversation = store.new_conversation()
        store.add_user_message(conversation, 0, question)
        ids = []
        for side, text in (("left", left_text), ("right", right_text)):
            ids.append(store.add_response(
                conversation, 0, side, "base" if side == "left" else "tuned", text,
                model="gemma", model_path=None, model_hash=None,
                adapter=None if side == "left" else "t", adapter_path=None, adapter_scale=None,
                template_name="gemma", template_source=None, params={},
                prompt_messages=[{"role": "user", "content": question}], n_tokens=None,
                ttft_s=None, tokens_per_s=None,
                finish_reason="length" if text in CUT_OFF else "stop"))
        store.record_vote(*ids, choice, blind=False, better_text=written)
