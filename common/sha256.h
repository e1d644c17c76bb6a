/*
 * SHA-256 (FIPS 180-4), for content digests of checkpoints and the
 * provenance hashes of input files.
 */
#ifndef FPTQ_SHA256_H
#define FPTQ_SHA256_H

#include "status.h"

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t total;
    uint8_t buf[64];
    size_t used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* sha256 of a whole file, as hex; errors name the file. */
fptq_status sha256_file(const char *path, char hex[65]);

#endif
