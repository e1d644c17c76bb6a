"""Checks fptq exports with real clients (run by export_client.sh inside a
virtual environment that holds compressed-tensors and torch from PyPI).

usage: export_client.py CASES_FILE
Each line of CASES_FILE: NAME KIND EXPORT_DIR REFERENCE_DIR ORIGINAL_DIR MAX_SHARD_BYTES
  KIND       compressed-tensors | gptq
  REFERENCE  `fptq export --format dequantized` of the same checkpoint: fptq's
             own dequantized weights (F32) and its unquantized tensors
  ORIGINAL   the input model directory, or "-": when given, every unquantized
             tensor must equal the input model's, dtype and bits
For compressed-tensors the weights are decompressed by compressed-tensors
itself (its CompressedTensorsDequantizer, driven by the exported config.json);
for GPTQ they are decoded here following the published v1 layout (AutoGPTQ's
QuantLinear: qweight packed along the input dimension, qzeros stored minus one,
3-bit values spread over 3 words per 32). Every tensor must match the
reference bit for bit. Prints "ok NAME" / "FAIL NAME: why" per case.
"""
import json
import os
import sys
import traceback

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def load_dir(d):
    """All tensors of a model directory, checking the index against the shards."""
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    files = sorted(set(idx["weight_map"].values()))
    tensors, sizes = {}, {}
    for f in files:
        part = load_file(os.path.join(d, f))
        with safe_open(os.path.join(d, f), "pt") as h:
            meta = h.metadata() or {}
        assert meta.get("format") == "pt", f"{f}: __metadata__ format is {meta.get('format')!r}"
        for k in part:
            assert idx["weight_map"].get(k) == f, f"{k} is in {f} but the index says {idx['weight_map'].get(k)}"
        sizes[f] = (sum(t.numel() * t.element_size() for t in part.values()), len(part))
        tensors.update(part)
    assert set(tensors) == set(idx["weight_map"]), "index and shards name different tensors"
    total = sum(s for s, _ in sizes.values())
    assert idx["metadata"]["total_size"] == total, f"total_size {idx['metadata']['total_size']} != {total}"
    return tensors, sizes


def ct_dequantize(d):
    """compressed-tensors' own decompression of the export, as its converter does it."""
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    tensors, sizes = load_dir(d)
    # The converter matches tensors by name only: with target "Linear" it takes
    # every "*.weight" for a quantized linear, the embedding included (engines
    # and transformers match by module class and never do): ignore it here.
    deq = CompressedTensorsDequantizer(d, ignore=["model.embed_tokens"], dtype=torch.float32)
    out = deq.process(dict(tensors))
    scheme = deq.quant_config.config_groups["group_0"]
    scale_dtype = next(t.dtype for k, t in tensors.items() if k.endswith(".weight_scale"))
    return out, sizes, scheme, scale_dtype, tensors


def unpack_gptq_rows(words, bits, n):
    """Rows of values packed along dim 0 of an int32 [words, cols] tensor, as AutoGPTQ lays them out."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    if bits in (2, 4, 8):
        per = 32 // bits
        shifts = torch.arange(0, 32, bits, dtype=torch.int64).view(1, per, 1)
        v = (w.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
        return v.reshape(-1, w.shape[1])[:n]
    assert bits == 3
    # AutoGPTQ's 3-bit layout: 32 values in 3 words; value 10 straddles words 0/1
    # (low 2 bits at 30-31, high bit at bit 0 of word 1), value 21 straddles 1/2.
    g = w.reshape(-1, 3, w.shape[1])
    vals = []
    for word, shifts in ((0, range(0, 30, 3)), (1, range(1, 31, 3)), (2, range(2, 32, 3))):
        if word == 1:
            vals.append(((g[:, 0] >> 30) & 0x3) | ((g[:, 1] & 0x1) << 2))
        if word == 2:
            vals.append(((g[:, 1] >> 31) & 0x1) | ((g[:, 2] & 0x3) << 1))
        for s in shifts:
            vals.append((g[:, word] >> s) & 0x7)
    return torch.stack(vals, dim=1).reshape(-1, w.shape[1])[:n]


def gptq_dequantize(d):
    tensors, sizes = load_dir(d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    qc = cfg["quantization_config"]
    qfile = json.load(open(os.path.join(d, "quantize_config.json")))
    assert qc == qfile, "config.json and quantize_config.json disagree"
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == "gptq", qc
    bits, gs = qc["bits"], qc["group_size"]
    out, scale_dtype = {}, None
    for k in list(tensors):
        if not k.endswith(".qweight"):
            continue
        p = k[: -len(".qweight")]
        qweight, qzeros = tensors.pop(k), tensors.pop(p + ".qzeros")
        scales, g_idx = tensors.pop(p + ".scales"), tensors.pop(p + ".g_idx")
        assert qweight.dtype == torch.int32 and qzeros.dtype == torch.int32 and g_idx.dtype == torch.int32
        scale_dtype = scales.dtype
        n_in, n_out = g_idx.shape[0], qweight.shape[1]
        assert qweight.shape[0] * 32 == n_in * bits, f"{k}: qweight {tuple(qweight.shape)} for {n_in} inputs"
        n_groups = 1 if gs == -1 else n_in // gs
        assert scales.shape == (n_groups, n_out) and qzeros.shape == (n_groups, n_out * bits // 32), p
        if not qc["desc_act"]:
            want = torch.arange(n_in, dtype=torch.int32) // (gs if gs > 0 else n_in)
            assert torch.equal(g_idx, want), f"{p}: desc_act false but g_idx is not i // group_size"
        q = unpack_gptq_rows(qweight, bits, n_in)                          # [in, out]
        z = unpack_gptq_rows(qzeros.t().contiguous(), bits, n_out).t() + 1  # [groups, out], v1: stored minus one
        gi = g_idx.long()
        w = (q - z[gi]).to(torch.float32) * scales.to(torch.float32)[gi]   # exact: integer times one scale
        out[p + ".weight"] = w.t().contiguous()
    out.update(tensors)
    return out, sizes, qc, scale_dtype, None


def check_case(name, kind, exp, ref, orig, max_shard):
    if kind == "compressed-tensors":
        got, sizes, scheme, scale_dtype, raw = ct_dequantize(exp)
        # static activation scales stay behind, next to the weights they belong to
        extra = sorted(set(got) - set(load_dir(ref)[0]))
        static = scheme.input_activations is not None and not scheme.input_activations.dynamic
        assert all(k.endswith(".input_scale") for k in extra), f"left over after decompression: {extra[:4]}"
        assert bool(extra) == static, f"input_scale tensors {len(extra)} but static activations {static}"
        for k in extra:
            assert raw[k].dtype == torch.float32 and raw[k].numel() == 1 and raw[k].item() > 0, k
            del got[k]
    else:
        got, sizes, _, scale_dtype, _ = gptq_dequantize(exp)
    want, _ = load_dir(ref)
    assert set(got) == set(want), f"tensor names differ: {sorted(set(got) ^ set(want))[:6]}"
    over = {f: s for f, (s, n) in sizes.items() if s > max_shard and n > 1}
    assert not over, f"shards over {max_shard} bytes: {over}"
    n_lin = 0
    for k, w in want.items():
        g = got[k]
        is_lin = w.dtype == torch.float32 and w.dim() == 2 and k.startswith("model.layers.") and "norm" not in k
        if is_lin:
            n_lin += 1
            if kind == "compressed-tensors":
                # compressed-tensors dequantizes in the scales' dtype; fptq's
                # reference is the exact fp32 product with the same scales:
                # equal once rounded to that dtype (an identity for F32 scales)
                w = w.to(scale_dtype).to(torch.float32)
        assert g.dtype == w.dtype and g.shape == w.shape, f"{k}: {g.dtype} {tuple(g.shape)} vs {w.dtype} {tuple(w.shape)}"
        if not torch.equal(g.view(torch.uint8), w.view(torch.uint8)):
            diff = (g.float() - w.float()).abs()
            raise AssertionError(f"{k}: {int((diff > 0).sum())} values differ, largest by {diff.max().item():.3g}")
    assert n_lin > 0 and n_lin % 7 == 0, f"{n_lin} linear weights compared"
    if orig != "-":
        ot = {}
        for f in os.listdir(orig):
            if f.endswith(".safetensors"):
                ot.update(load_file(os.path.join(orig, f)))
        kept = [k for k in ot if not any(p in k for p in ("_proj.",))]
        for k in kept:
            assert k in got, f"{k} of the input model is missing"
            assert got[k].dtype == ot[k].dtype and torch.equal(got[k].view(torch.uint8), ot[k].view(torch.uint8)), \
                f"{k}: not the input model's {ot[k].dtype} bits"
    return f"{n_lin} linears bit-exact, scales {str(scale_dtype).replace('torch.', '')}, {len(sizes)} shard(s)"


def main():
    fails = 0
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        name, kind, exp, ref, orig, max_shard = line.split()
        try:
            print(f"ok {name}: {check_case(name, kind, exp, ref, orig, int(max_shard))}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its case
            fails += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
