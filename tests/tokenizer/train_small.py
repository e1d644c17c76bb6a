"""The small tokenizers of tests/data/tokenizers/, trained by Hugging Face
`tokenizers` (0.23.3) on tinystories.txt: the pipelines of GPT-2 (byte-level
regex), Llama 3 (Split regex + ignore_merges + byte-level) and Mistral
(Metaspace "first" + byte fallback + unk). The fuzzers and benchmarks use
them where a real model's tokenizer is not bundled.
usage: train_small.py TINYSTORIES_TXT OUT_DIR"""
import os
import sys

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, trainers

txt, out = sys.argv[1], sys.argv[2]


def save(tok, name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    print(d)


t = Tokenizer(models.BPE())
t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
t.train([txt], trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
save(t, "gpt2-tinystories")

L3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
t = Tokenizer(models.BPE(ignore_merges=True))
t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(L3), "isolated"),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
t.train([txt], trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
t.post_processor = processors.TemplateProcessing(
    single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", t.token_to_id("<|begin_of_text|>"))])
save(t, "llama3-tinystories")

t = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
t.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
t.train([txt], trainers.BpeTrainer(vocab_size=1200,
                                   special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]))
t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", t.token_to_id("<s>"))])
save(t, "mistral-tinystories")
