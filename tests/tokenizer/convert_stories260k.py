"""stories260K's SentencePiece model (tok512.model, llama2.c) converted to
tokenizer.json by transformers' fast-tokenizer converter, as a user of
transformers gets it: AutoTokenizer over a directory holding tokenizer.model.
usage: convert_stories260k.py TOK512_MODEL OUT_DIR   (OUT_DIR: tokenizer.json, tokenizer_config.json)
Made with transformers 5.23.0, tokenizers 0.23.3, sentencepiece 0.2.x."""
import json
import os
import shutil
import sys
import tempfile

from transformers import AutoTokenizer

src, out = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as d:
    shutil.copy(src, os.path.join(d, "tokenizer.model"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>"}, f)
    tok = AutoTokenizer.from_pretrained(d)
    with tempfile.TemporaryDirectory() as o:
        tok.save_pretrained(o)
        os.makedirs(out, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(o, name), os.path.join(out, name))
print(f"{out}: tokenizer.json ({len(tok)} tokens), tokenizer_config.json")
