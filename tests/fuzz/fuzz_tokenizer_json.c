/*
 * libFuzzer harness: tokenizer.json bytes from the fuzzer. A file that loads
 * must then encode hostile text without a crash, ids in range, the same ids
 * twice; one that does not load must say why.
 */
#include "io/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *TEXTS[] = {
    "Once upon a time, there was a little cat. It's 12345 o'clock!",
    "  \t\n\r\n  leading spaces, <s>added</s> tokens<unk>glued\xe2\x96\x81",
    "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 \xe6\xbc\xa2\xe5\xad\x97 "
    "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8 e\xcc\x81 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xc2\xa0\xe3\x80\x80",
    "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fptq_tokenizer *t = NULL;
    fptq_clear_error();
    if (fptq_tokenizer_load_buffer("fuzz.json", (const char *)data, size, 0, &t) != FPTQ_OK) {
        if (!fptq_last_error()[0])
            abort(); /* a refusal must say why */
        return 0;
    }
    for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
        for (int bos = 0; bos < 3; bos++) {
            fptq_ids a = {0}, b = {0};
            fptq_clear_error();
            fptq_status s1 = fptq_tokenizer_encode(t, TEXTS[i], strlen(TEXTS[i]), (fptq_bos_policy)bos, "t", &a);
            fptq_status s2 = fptq_tokenizer_encode(t, TEXTS[i], strlen(TEXTS[i]), (fptq_bos_policy)bos, "t", &b);
            if (s1 != s2 || (s1 == FPTQ_OK && (a.n != b.n || (a.n && memcmp(a.v, b.v, (size_t)a.n * sizeof *a.v) != 0))))
                abort(); /* the word cache must not change a result */
            for (int64_t k = 0; s1 == FPTQ_OK && k < a.n; k++)
                if (a.v[k] < 0 || a.v[k] >= fptq_tokenizer_n_ids(t))
                    abort();
            fptq_ids_free(&a);
            fptq_ids_free(&b);
        }
    }
    fptq_tokenizer_free(t);
    return 0;
}
