/*
 * libFuzzer harness: text from the fuzzer, encoded by real tokenizers (the
 * bundled stories260K one, SentencePiece-style with byte fallback, and the
 * byte-level and Metaspace ones of tests/data/tokenizers). Valid UTF-8 must
 * encode; invalid must be refused with the offset; ids in range; with a
 * byte-level tokenizer every byte of the text is covered, so never no ids
 * for a non-empty text.
 */
#include "io/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FPTQ_SOURCE_DIR
#error "FPTQ_SOURCE_DIR must name the source tree"
#endif

static fptq_tokenizer *TOKS[4];
static int N_TOKS;

static void load_all(void)
{
    static const char *dirs[] = {"examples/stories260K", "tests/data/tokenizers/gpt2-tinystories",
                                 "tests/data/tokenizers/llama3-tinystories", "tests/data/tokenizers/mistral-tinystories"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", FPTQ_SOURCE_DIR, dirs[i]);
        if (fptq_tokenizer_load(p, 0, &TOKS[N_TOKS]) != FPTQ_OK) {
            fprintf(stderr, "fuzz_tokenizer_encode: %s\n", fptq_last_error());
            abort();
        }
        N_TOKS++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!N_TOKS)
        load_all();
    for (int i = 0; i < N_TOKS; i++) {
        fptq_ids ids = {0};
        fptq_clear_error();
        fptq_status st = fptq_tokenizer_encode(TOKS[i], (const char *)data, size, FPTQ_BOS_NO, "fuzz", &ids);
        if (st != FPTQ_OK) {
            if (st != FPTQ_ERR_FORMAT || !strstr(fptq_last_error(), "invalid UTF-8 at byte offset"))
                abort();
        } else {
            for (int64_t k = 0; k < ids.n; k++)
                if (ids.v[k] < 0 || ids.v[k] >= fptq_tokenizer_n_ids(TOKS[i]))
                    abort();
            if (i == 1 && size > 0 && ids.n == 0)
                abort(); /* byte-level: every byte has a token */
        }
        fptq_ids_free(&ids);
    }
    return 0;
}
