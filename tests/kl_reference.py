"""The figures of fptq eval --reference computed independently: transformers
(fp32, CPU) gives the full logits of a model and of its reference on the same
windows, numpy the per-token KL(P_ref || P_model), top-token agreement and
the change in p(true token). Prints one JSON object with fptq eval's keys.
usage: kl_reference.py MODEL_DIR REF_DIR IDS.npy T N S"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

model_dir, ref_dir, ids_path = sys.argv[1:4]
T, N, S = (int(x) for x in sys.argv[4:7])
ids = np.load(ids_path).astype(np.int64).reshape(-1)[S:S + N * T].reshape(N, T)
torch.set_num_threads(1)


def logprobs(d):
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        lg = m(input_ids=torch.from_numpy(ids)).logits[:, :-1, :].double().numpy()
    return lg - np.logaddexp.reduce(lg, axis=-1, keepdims=True)


lq, lr = logprobs(model_dir), logprobs(ref_dir)
tgt = ids[:, 1:]
kl = (np.exp(lr) * (lr - lq)).sum(-1).reshape(-1)
pq = np.take_along_axis(lq, tgt[..., None], -1).squeeze(-1)
pr = np.take_along_axis(lr, tgt[..., None], -1).squeeze(-1)
dp = (np.exp(pq) - np.exp(pr)).reshape(-1)
print(json.dumps({
    "ppl": float(np.exp(-pq.mean())), "ref_ppl": float(np.exp(-pr.mean())),
    "kl_mean": float(kl.mean()), "kl_median": float(np.percentile(kl, 50)), "kl_p90": float(np.percentile(kl, 90)),
    "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
    "top1_agree": float((lq.argmax(-1) == lr.argmax(-1)).mean()), "rms_dp": float(np.sqrt((dp ** 2).mean())),
    "predicted": int(kl.size)}))
