/*
 * A model's own tokenizer, read from its Hugging Face tokenizer.json, and
 * text in: UTF-8 text encoded to token ids exactly as the Hugging Face
 * `tokenizers` library encodes it (BPE models, byte-level and SentencePiece
 * style). The pre-tokenizer regexes run on PCRE2 as written in the file;
 * Unicode normalization is utf8proc's. What the file asks for and fptq does
 * not implement is refused, naming the JSON path: never approximated.
 */
#ifndef FPTQ_TOKENIZER_H
#define FPTQ_TOKENIZER_H

#include "../common/status.h"
#include "npy.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fptq_tokenizer fptq_tokenizer;

/* Where BOS goes:
 *  AUTO  what tokenizer.json's post-processor adds to each document (as
 *        `tokenizers`' encode(doc) with add_special_tokens=True);
 *  YES   one BOS token before each document and nothing else (the BOS of
 *        tokenizer_config.json's bos_token, else config.json's bos_token_id);
 *  NO    no special tokens at all (add_special_tokens=False). */
typedef enum fptq_bos_policy { FPTQ_BOS_AUTO = 0, FPTQ_BOS_YES, FPTQ_BOS_NO } fptq_bos_policy;

fptq_status fptq_bos_policy_parse(const char *s, fptq_bos_policy *out);
const char *fptq_bos_policy_name(fptq_bos_policy p);

/* Loads DIR/tokenizer.json (and DIR/tokenizer_config.json, DIR/config.json
 * where present, for the BOS token). model_vocab_size > 0: every id of the
 * tokenizer must be below it (the model's embedding rows). */
fptq_status fptq_tokenizer_load(const char *model_dir, int64_t model_vocab_size, fptq_tokenizer **out);
void fptq_tokenizer_free(fptq_tokenizer *t);
/* The same from tokenizer.json's bytes (name in messages); no BOS for --bos yes. */
fptq_status fptq_tokenizer_load_buffer(const char *name, const char *json, size_t n, int64_t model_vocab_size,
                                       fptq_tokenizer **out);

/* sha256 (hex) of the tokenizer.json bytes that were loaded. */
const char *fptq_tokenizer_sha256(const fptq_tokenizer *t);
/* Number of ids (one past the largest id, model vocabulary and added tokens). */
int64_t fptq_tokenizer_n_ids(const fptq_tokenizer *t);
/* The token string of an id, or NULL. */
const char *fptq_tokenizer_token(const fptq_tokenizer *t, int32_t id);

/* A growable array of ids. */
typedef struct fptq_ids {
    int32_t *v;
    int64_t n, cap;
} fptq_ids;
void fptq_ids_free(fptq_ids *ids);

/* Encodes one document (UTF-8, len bytes) and appends its ids to out.
 * Invalid UTF-8 is an error naming the byte offset (relative to the
 * document; `where` names it in messages, e.g. "wiki.txt: document 3"). */
fptq_status fptq_tokenizer_encode(fptq_tokenizer *t, const char *text, size_t len, fptq_bos_policy bos,
                                  const char *where, fptq_ids *out);

/* Characters with no token (no byte fallback, no unk token) are dropped, as
 * `tokenizers` drops them; this counts them since load. */
int64_t fptq_tokenizer_dropped_chars(const fptq_tokenizer *t);

/* ---- text files in ------------------------------------------------------ */

/* A text source: either a plain UTF-8 file (text_path; the whole file one
 * document, or split on doc_sep where given: empty documents are skipped)
 * or JSON Lines (jsonl_path: the string `field` of each line's object is a
 * document). Documents are encoded one by one and their ids concatenated. */
typedef struct fptq_text_source {
    const char *text_path;
    const char *jsonl_path;
    const char *field;
    const char *doc_sep;    /* already unescaped; NULL or "" = one document */
    fptq_bos_policy bos;
    int64_t max_tokens;     /* > 0: stop after the document that reaches this many
                               tokens (calibration and evaluation use a prefix) */
} fptq_text_source;

typedef struct fptq_text_stats {
    int64_t bytes, documents, tokens;
    int stopped_early;       /* max_tokens reached before the end of the file */
    double seconds;          /* encoding time, reading excluded */
    char text_sha256[65];    /* of the file's bytes */
} fptq_text_stats;

/* Reads and encodes a text source into a 1-D token stream (out->n_rows = 1). */
fptq_status fptq_tokenize_source(fptq_tokenizer *t, const fptq_text_source *src, fptq_tokens *out,
                                 fptq_text_stats *stats);

/* The tokenizer of tokenizer_dir (checked against the model's vocab_size)
 * over a text source: what `fptq quantize --calib-text` and `fptq eval
 * --text` use. tokenizer_sha256 (may be NULL) gets the tokenizer.json digest. */
fptq_status fptq_tokens_from_text(const char *tokenizer_dir, int64_t vocab_size, const fptq_text_source *src,
                                  fptq_tokens *out, fptq_text_stats *stats, char tokenizer_sha256[65]);

/* "\n", "\t", "\r", "\\", "\0" not allowed: turns the escapes of a command-line
 * --doc-sep into bytes (a new string, free()). */
fptq_status fptq_unescape_arg(const char *opt, const char *s, char **out);

#endif
