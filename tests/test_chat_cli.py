import json
import subprocess
import sys


def diptych(*args, **kw):
    return subprocess.run([sys.executable, "-m", "diptych", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_version():
    out = diptych("--version")
    assert out.returncode == 0 and out.stdout.startswith("diptych ")


def test_chat_json_has_both_answers(data_dir):
    out = diptych("--data-dir", str(data_dir), "chat", "--prompt", "What is the capital of France?",
                  "--max-tokens", "8", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for role in ("base", "tuned"):
        assert 0 < result[role]["n_tokens"] <= 8
        assert result[role]["seed"] == 3
        assert result[role]["tokens_per_s"] > 0
    # no adapter: the tuned pane is the base, and the same seed gives the same text
    assert result["tuned"]["adapter"] is None
    assert result["base"]["text"] == result["tuned"]["text"]
    assert result["template"] == "gemma"


def test_chat_with_a_bad_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model at all")
    out = diptych("--model", str(bad), "chat", "--prompt", "hi")
    assert out.returncode == 2
    assert "is not a GGUF file" in out.stderr
