# The expectations of tests/test_tokenizer.c held against Hugging Face `tokenizers`:
# run test_tokenizer with FPTQ_TOKENIZER_CASES=FILE, then this on FILE; every
# case must give the ids the unit test asserts.
import sys, json, os, tempfile
from tokenizers import Tokenizer
bad = 0; n = 0
for line in open(sys.argv[1]):
    c = json.loads(line); n += 1
    tok = Tokenizer.from_str(c['tokenizer.json'])
    if c['bos'] == 'yes':
        bid = None
        if 'tokenizer_config.json' in c:
            b = json.loads(c['tokenizer_config.json']).get('bos_token')
            if isinstance(b, dict): b = b.get('content')
            if b is not None: bid = tok.token_to_id(b)
        if bid is None: bid = json.loads(c['config.json'])['bos_token_id']
        ids = [bid] + tok.encode(c['text'], add_special_tokens=False).ids
    else:
        ids = tok.encode(c['text'], add_special_tokens=(c['bos']=='auto')).ids
    if ids != c['want']:
        bad += 1; print('MISMATCH', repr(c['text']), 'hf', ids, 'test wants', c['want'], c['tokenizer.json'][:300])
print(f'{n} cases, {bad} differ from tokenizers')
