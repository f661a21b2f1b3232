"""The tiny random models dn's family tests use: one per family, dimensions chosen so that what makes the
family differ from Llama matters (head_dim != hidden / heads, GQA, biases, sliding windows shorter than the
examples, soft-caps small enough to bend the scores, rope scaling whose long/short or interpolated
frequencies apply, fused projections, partial rotary). Shared by family_models.py (transformers 5) and
family_legacy.py (transformers 4.57, the older config layout)."""

# vocab_size is the size of the tokenizer family_models.py trains (written into each config.json).
COMMON = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)

# Each family: its config class, config values beyond COMMON (in transformers 5's terms: rope in
# `rope_parameters`), the dtype its weights are saved in, how they are sharded, its chat template, and its
# special tokens.
# gpt-oss's harmony tokens that no other family's template uses (`<|end|>` and `<|endoftext|>` are shared).
HARMONY_TOKENS = ["<|startoftext|>", "<|start|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>",
                  "<|constrain|>"]

FAMILIES = {
    "llama": dict(
        config="LlamaConfig",
        values=dict(
            head_dim=8, attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=4.0, low_freq_factor=1.0,
                                 high_freq_factor=2.0, original_max_position_embeddings=8),
        ),
        dtype="float32", shard="60KB", template="llama3",
        bos="<|begin_of_text|>", eos="<|eot_id|>", generation_eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
    ),
    "mistral": dict(
        config="MistralConfig",
        values=dict(head_dim=16, sliding_window=5, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        dtype="bfloat16", shard=None, template="mistral",
        bos="<s>", eos="</s>", generation_eos=["</s>"],
    ),
    "qwen2": dict(
        config="Qwen2Config",
        values=dict(use_sliding_window=True, sliding_window=6, max_window_layers=1, tie_word_embeddings=True,
                    rope_parameters=dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0,
                                         original_max_position_embeddings=16)),
        dtype="float32", shard=None, template="qwen2",
        bos=None, eos="<|im_end|>", generation_eos=["<|im_end|>", "<|endoftext|>"],
    ),
    "qwen3": dict(
        config="Qwen3Config",
        values=dict(head_dim=16, tie_word_embeddings=True,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        dtype="float16", shard=None, template="qwen3",
        bos=None, eos="<|im_end|>", generation_eos=["<|im_end|>", "<|endoftext|>"],
    ),
    "gemma2": dict(
        config="Gemma2Config",
        values=dict(head_dim=16, query_pre_attn_scalar=24, attn_logit_softcapping=1.5,
                    final_logit_softcapping=4.0, sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                    tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        dtype="bfloat16", shard=None, template="gemma2",
        bos="<bos>", eos="<eos>", generation_eos=["<eos>", "<end_of_turn>"],
    ),
    "gemma3": dict(
        config="Gemma3TextConfig",
        values=dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                    tie_word_embeddings=True,
                    rope_parameters={
                        "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1000000.0),
                        "sliding_attention": dict(rope_type="default", rope_theta=10000.0),
                    }),
        dtype="bfloat16", shard=None, template="gemma3",
        bos="<bos>", eos="<eos>", generation_eos=["<eos>", "<end_of_turn>"],
    ),
    "phi3": dict(
        config="Phi3Config",
        values=dict(sliding_window=7, original_max_position_embeddings=8, max_position_embeddings=32,
                    tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.75,
                                         short_factor=[1.0, 1.3, 2.0], long_factor=[1.5, 3.0, 6.0])),
        dtype="float32", shard=None, template="phi3",
        bos=None, eos="<|endoftext|>", generation_eos=["<|end|>", "<|endoftext|>"],
    ),
    # Mixture-of-experts: top-k routing over few experts, so that every expert gets tokens and some tokens
    # reach each pair of experts; Qwen3-MoE without top-k renormalisation and with a dense layer between
    # sparse ones (mlp_only_layers), Mixtral always renormalised and windowed.
    "qwen3_moe": dict(
        config="Qwen3MoeConfig",
        values=dict(head_dim=16, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24,
                    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        dtype="bfloat16", shard=None, template="qwen3",
        bos=None, eos="<|im_end|>", generation_eos=["<|im_end|>", "<|endoftext|>"],
    ),
    # Qwen2-MoE: q/k/v biases, a shared expert behind its sigmoid gate, the window on layer 0 only (odd-numbered
    # layers below max_window_layers).
    "qwen2_moe": dict(
        config="Qwen2MoeConfig",
        values=dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                    shared_expert_intermediate_size=40, use_sliding_window=True, sliding_window=6,
                    max_window_layers=2, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        dtype="float32", shard=None, template="qwen2",
        bos=None, eos="<|im_end|>", generation_eos=["<|im_end|>", "<|endoftext|>"],
    ),
    # gpt-oss: sinks, q/k/v/o biases, sliding and full layers alternating, yarn (not truncated), a router
    # with a bias, experts with biases and gate/up interleaved, the SwiGLU clamped at a limit small enough
    # to cut. Its harmony chat template (templates/gpt_oss.jinja) needs harmony's special tokens: its
    # tokenizer is the shared one with HARMONY_TOKENS added after it.
    "gpt_oss": dict(
        config="GptOssConfig",
        values=dict(head_dim=8, num_local_experts=4, num_experts_per_tok=2, intermediate_size=32, sliding_window=4,
                    swiglu_limit=0.8, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="yarn", rope_theta=150000.0, factor=4.0,
                                         original_max_position_embeddings=8, beta_fast=32.0, beta_slow=1.0,
                                         truncate=False)),
        dtype="bfloat16", shard=None, template="gpt_oss", extra_special=HARMONY_TOKENS,
        bos="<|startoftext|>", eos="<|return|>", generation_eos=["<|return|>", "<|endoftext|>", "<|call|>"],
    ),
    "mixtral": dict(
        config="MixtralConfig",
        values=dict(head_dim=8, num_local_experts=4, num_experts_per_tok=2, intermediate_size=20, sliding_window=5,
                    tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        dtype="float32", shard="80KB", template="mistral",
        bos="<s>", eos="</s>", generation_eos=["</s>"],
    ),
}

# Every special token any family's template uses (one tokenizer serves all the tiny models).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>",
    "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
    "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
]
# Tokens the Qwen templates write that are ordinary (non-special) added tokens in Qwen's tokenizer.
ADDED_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

LORA_RANK, LORA_ALPHA = 4, 8.0
STEPS, LEARNING_RATE = 3, 1e-2
# The date strftime_now renders in the chat-template fixtures (dn's tests fix the template clock to it).
TEMPLATE_DATE = (2026, 7, 26)
