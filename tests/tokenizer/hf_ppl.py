"""Perplexity of a Hugging Face model directory by transformers (fp32, CPU)
on token ids from a .npy, with fptq eval's window protocol: N consecutive
windows of T tokens from token S, each scored from position 0, predicting
its tokens 1..T-1; ppl = exp(mean NLL). Prints `ppl=<value>`.
usage: hf_ppl.py MODEL_DIR IDS.npy T N S"""
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

model_dir, ids_path = sys.argv[1], sys.argv[2]
T, N, S = (int(x) for x in sys.argv[3:6])
ids = np.load(ids_path).astype(np.int64).reshape(-1)
assert S + N * T <= len(ids), f"{ids_path}: {len(ids)} tokens, the windows need {S + N * T}"
torch.set_num_threads(1)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model.eval()
x = torch.from_numpy(ids[S:S + N * T].reshape(N, T))
with torch.no_grad():
    logits = model(input_ids=x).logits.double()
logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
print(f"predicted={nll.numel()} nll={nll.mean().item():.9f} ppl={torch.exp(nll.mean()).item():.9f}")
