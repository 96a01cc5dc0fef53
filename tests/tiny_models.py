"""Tiny random-weight GGUF models of each architecture Diptych trains, built in a second.

No model of these architectures can be downloaded in the tests, so each is made here:
a Hugging Face model of the architecture with random weights (two layers, width 64), then
written to GGUF the way llama.cpp's ``convert_hf_to_gguf.py`` writes it -- the ``gguf``
package's tensor-name map, the Llama converter's q/k row permutation, Gemma's norm weights
stored as 1 + w -- with a real vocabulary: a byte-level BPE with merges, trained on a few
sentences with the ``tokenizers`` package, and a ChatML chat template in the file (its
turns end with ``<|im_end|>``, which is not the file's EOS). Gemma files get what real
ones have: a SentencePiece vocabulary (the first 4,096 pieces of the bundled model's and its
Latin letters, with their scores; transformers builds Gemma tokenizers for sentencepiece only)
and Gemma's instruction template, whose turns end with ``<end_of_turn>``.

The tests then check that llama.cpp and transformers read the file the same way (equal
logits), so a mistake here shows as a failure there, not as a silent pass.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA_IT = ("{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + "
            "('model' if message['role'] == 'assistant' else message['role']) + '\n' + "
            "message['content'] + '<end_of_turn>\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
SPM_PIECES = 4096
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The sea is wide and deep, and its waves never stop moving.",
    "What is the capital of France? The capital of France is Paris.",
    "A spider has eight legs. Bees make honey. The sky is blue.",
    "Write one sentence about the sea. Answer in one sentence.",
    "Shakespeare wrote Hamlet. Mercury is closest to the Sun.",
    "user assistant system hello there, who wrote this? 0123456789",
] * 4

# GGUF ``general.architecture`` -> the tiny model's name, its transformers config and extra keys
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3")
WIDTH, LAYERS, FFN, CONTEXT = 64, 2, 128, 512


def _tokenizer() -> tuple[list[str], list[str]]:
    """(tokens in id order, merges) of a small byte-level BPE trained on CORPUS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


@lru_cache(maxsize=1)
def _sentencepiece() -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, token types): the head of the bundled Gemma vocabulary."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    from diptych.models.catalog import bundled_model_path

    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    metadata, _ = read_gguf_metadata(str(bundled_model_path()), keys)
    tokens = metadata[keys[0]]
    # the first pieces, and the Latin letters they are merged from (those come later in Gemma's
    # order, and a BPE tokenizer needs them where sentencepiece can do without)
    keep = [i for i, t in enumerate(tokens) if i < SPM_PIECES or (len(t) == 1 and ord(t) < 0x250)]
    return tuple([metadata[k][i] for i in keep] for k in keys)


def _hf_config(arch: str, vocab: int):
    """A transformers config of the architecture, shaped as its GGUF loader reads it back
    (Qwen3 and Gemma take head_dim and query_pre_attn_scalar from their defaults: 128, 256)."""
    import transformers as t

    common = dict(hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
                  vocab_size=vocab, max_position_embeddings=CONTEXT, rms_norm_eps=1e-6,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.5)
    if arch in ("llama", "mistral"):
        cls = t.LlamaConfig if arch == "llama" else t.MistralConfig
        return cls(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   tie_word_embeddings=False, **common)
    if arch == "qwen2":
        return t.Qwen2Config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                             **common)
    if arch == "qwen3":
        return t.Qwen3Config(num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                             tie_word_embeddings=True, **common)
    if arch == "phi3":
        return t.Phi3Config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                            **common)
    if arch == "gemma2":
        return t.Gemma2Config(num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                              query_pre_attn_scalar=256, sliding_window=CONTEXT,
                              final_logit_softcapping=30.0, attn_logit_softcapping=50.0, **common)
    if arch == "gemma3":
        return t.Gemma3TextConfig(num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                                  query_pre_attn_scalar=256, sliding_window=CONTEXT, **common)
    raise ValueError(arch)


def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: the rows of q/k from Hugging Face's rotary layout
    (halves) to GGUF's (interleaved pairs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _answer_ends_at_once(model, end_id: int) -> None:
    """Make the end-of-turn token the likeliest next token everywhere: the residual stream's
    first dimension is 1 for every token and no layer writes to it, the final norm keeps only
    that dimension, and only the end-of-turn row of the (untied) output layer reads it."""
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[end_id, 0] = 10.0


def build(arch: str, path: Path, seed: int = 0, chat_template: str | None = CHATML,
          ends_at_once: bool = False) -> Path:
    """Write a tiny random-weight GGUF of ``arch`` (one of ARCHITECTURES) to ``path``;
    ``ends_at_once`` (llama only): a model whose every answer is its end-of-turn token."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    gemma = arch.startswith("gemma")
    tokens, merges = (_sentencepiece()[0], None) if gemma else _tokenizer()
    config = _hf_config(arch, len(tokens))
    if arch.startswith("gemma"):  # sqrt(width)-scaled embeddings: smaller weights, same spread
        config.initializer_range = 0.15
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if ends_at_once:
        _answer_ends_at_once(model, tokens.index("<|im_end|>"))
    gguf_arch = "llama" if arch == "mistral" else arch
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or WIDTH // n_head

    writer = gguf.GGUFWriter(str(path), gguf_arch)
    # Named as the real files are: "Mistral 7B ..." loads in transformers as Llama (only a file
    # named exactly "mistral" becomes Mistral, which its GGUF loader then cannot map), and a
    # name with "phi3" in it makes llama.cpp look for sentencepiece's "</s>" in the vocabulary.
    writer.add_name({"mistral": "Mistral tiny", "phi3": "Phi 3 tiny"}.get(arch, f"tiny {arch}"))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters.get("rope_theta", 10000.0)
                                    if "rope_theta" in config.rope_parameters
                                    else config.rope_parameters["full_attention"]["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim * n_head != WIDTH:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch.startswith("gemma"):
        writer.add_sliding_window(config.sliding_window)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)

    if gemma:
        tokens, scores, types = _sentencepiece()
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(tokens.index("<bos>"))
        writer.add_eos_token_id(tokens.index("<eos>"))
        writer.add_unk_token_id(tokens.index("<unk>"))
        writer.add_pad_token_id(tokens.index("<pad>"))
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(False)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe" if gguf_arch == "llama" else "qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL
                                for t in tokens])
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index("<|endoftext|>"))
        writer.add_eos_token_id(tokens.index("<|endoftext|>"))
        writer.add_pad_token_id(tokens.index("<|endoftext|>"))
        writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(GEMMA_IT if gemma and chat_template == CHATML else chat_template)

    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items()
                                          if n == gguf_arch), LAYERS)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        module, suffix = key.rsplit(".", 1)
        name = names.get_name(module)
        if name is None:
            raise ValueError(f"{arch}: no GGUF name for {key}")
        data = tensor.detach().float().numpy()
        if gguf_arch == "llama" and name.endswith(".attn_q"):
            data = llama_permute(data, n_head, n_head)
        elif gguf_arch == "llama" and name.endswith(".attn_k"):
            data = llama_permute(data, n_head, n_kv)
        if arch.startswith("gemma") and key.endswith("norm.weight"):
            data = data + 1  # Gemma scales by (1 + w); GGUF stores the scale itself
        writer.add_tensor(f"{name}.{suffix}", np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
