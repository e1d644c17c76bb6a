#!/usr/bin/env python3
"""The reference side of `fptq tokenize`: Hugging Face `tokenizers` on the same documents.

    hf_encode.py --model DIR --text FILE --out ids.npy [--doc-sep STRING] [--bos auto|yes|no]
    hf_encode.py --model DIR --jsonl FILE --field NAME --out ids.npy [--bos ...]
    hf_encode.py --batch CASES       one case a line: the options above, tab-separated
                                     (one process for all; each tokenizer loaded once)
    hf_encode.py --compare GOT.npy WANT.npy --model DIR (--text ... | --jsonl ...) [options]
                                     exit 0 when equal; else prints the first differing
                                     index, both id sequences around it with their token
                                     strings, and the text around it (exit 1)

Semantics (fptq tokenize's contract):
  --text: the whole file is one document; with --doc-sep S (escapes \\n \\t \\r \\\\) the file is
  split on S and empty documents are skipped. --jsonl: each non-empty line is a JSON object,
  its string field NAME is a document (empty strings skipped). Each document is encoded on
  its own and the ids concatenated (1-D int32 .npy).
  --bos auto: encode(doc).ids (the post-processor's template); no: encode(doc,
  add_special_tokens=False).ids; yes: [bos] + the latter, bos = the id of
  tokenizer_config.json's bos_token (a string or an object with "content"), else
  config.json's bos_token_id.
"""
import argparse
import json
import os
import sys

import numpy as np
from tokenizers import Tokenizer


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            m = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(n)
            if m is None:
                raise SystemExit("--doc-sep: unknown escape \\%s" % n)
            out.append(m)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def documents(a):
    if a.text:
        with open(a.text, "rb") as f:
            text = f.read().decode("utf-8")  # strict: invalid UTF-8 is an error, as in fptq
        if a.doc_sep:
            return [d for d in text.split(unescape(a.doc_sep)) if d]
        return [text] if text else []
    docs = []
    with open(a.jsonl, "rb") as f:
        for line in f.read().decode("utf-8").split("\n"):
            if not line.strip(" \t\r"):  # JSON whitespace only: no document
                continue
            v = json.loads(line)[a.field]
            if not isinstance(v, str):
                raise SystemExit("%s: field %s is not a string" % (a.jsonl, a.field))
            if v:
                docs.append(v)
    return docs


_toks = {}


def load(model):
    if model not in _toks:
        _toks[model] = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    return _toks[model]


def bos_id(model, tok):
    p = os.path.join(model, "tokenizer_config.json")
    if os.path.exists(p):
        b = json.load(open(p)).get("bos_token")
        if isinstance(b, dict):
            b = b.get("content")
        if isinstance(b, str):
            i = tok.token_to_id(b)
            if i is None:
                raise SystemExit("%s: bos_token %r is no token" % (p, b))
            return i
    p = os.path.join(model, "config.json")
    if os.path.exists(p):
        i = json.load(open(p)).get("bos_token_id")
        if isinstance(i, int):
            return i
    raise SystemExit("%s: no bos_token in tokenizer_config.json nor bos_token_id in config.json" % model)


def encode_docs(a):
    """The per-document encodings (tokenizers' Encoding objects) and the BOS id prepended (or None)."""
    tok = load(a.model)
    docs = documents(a)
    special = a.bos == "auto"
    # encode_batch == encode of each, in parallel where RAYON allows
    encs = tok.encode_batch(docs, add_special_tokens=special) if docs else []
    bos = bos_id(a.model, tok) if a.bos == "yes" else None
    return tok, docs, encs, bos


def ids_of(encs, bos):
    parts = []
    for e in encs:
        if bos is not None:
            parts.append([bos])
        parts.append(e.ids)
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]).astype(np.int32)


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--text")
    ap.add_argument("--jsonl")
    ap.add_argument("--field")
    ap.add_argument("--doc-sep")
    ap.add_argument("--bos", default="auto", choices=["auto", "yes", "no"])
    ap.add_argument("--out")
    ap.add_argument("--batch")
    ap.add_argument("--compare", nargs=2, metavar=("GOT", "WANT"))
    return ap


def run_one(a):
    _, _, encs, bos = encode_docs(a)
    ids = ids_of(encs, bos)
    np.save(a.out, ids)
    return len(ids)


def show(tok, ids, lo, hi, mark):
    cells = []
    for k in range(lo, min(hi, len(ids))):
        t = tok.id_to_token(int(ids[k]))
        cells.append("%s%d:%d%s" % ("[" if k == mark else "", k, ids[k], "=%r]" % t if k == mark else "=%r" % t))
    return " ".join(cells)


def compare(a):
    got = np.load(a.compare[0])
    want = np.load(a.compare[1])
    if got.dtype != np.int32 or got.ndim != 1:
        print("fptq's ids are %s %s, not 1-D int32" % (got.dtype, got.shape))
        return 1
    if len(got) == len(want) and np.array_equal(got, want):
        return 0
    n = min(len(got), len(want))
    d = np.nonzero(got[:n] != want[:n])[0]
    i = int(d[0]) if len(d) else n
    tok, docs, encs, bos = encode_docs(a)
    print("%d ids from fptq, %d from tokenizers; first difference at index %d" % (len(got), len(want), i))
    print("  fptq:       " + show(tok, got, max(0, i - 6), i + 8, i))
    print("  tokenizers: " + show(tok, want, max(0, i - 6), i + 8, i))
    # where in the text: the document and the reference token's character offsets
    pos = 0
    for di, e in enumerate(encs):
        first = pos
        pos += len(e.ids) + (1 if bos is not None else 0)
        if i < pos or di == len(encs) - 1:
            k = i - first - (1 if bos is not None else 0)
            k = max(0, min(k, len(e.offsets) - 1)) if e.offsets else 0
            off = e.offsets[k] if e.offsets else (0, 0)
            doc = docs[di]
            print("  document %d of %d, reference token %d covers characters %s: %r" % (
                di, len(docs), k, tuple(off), doc[off[0]:off[1]]))
            print("  text around it: %r" % doc[max(0, off[0] - 60):off[1] + 60])
            break
    return 1


def main():
    a = parser().parse_args()
    if a.batch:
        # lines: OPTIONS, split on white space (no quoting: paths without spaces); one run each
        p = parser()
        for line in open(a.batch):
            if line.strip():
                b = p.parse_args(line.split())
                try:
                    n = run_one(b)
                except SystemExit as e:  # no BOS to put in front, say: fptq must refuse too
                    with open(b.out + ".err", "w") as f:
                        f.write("%s\n" % e)
                    print("%s: %s" % (b.out, e), flush=True)
                    continue
                print("%s -> %d ids" % (b.out, n), flush=True)
        return 0
    if a.compare:
        return compare(a)
    if not a.model or not a.out or not (a.text or (a.jsonl and a.field)):
        parser().error("need --model, --out and --text or --jsonl with --field")
    run_one(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
