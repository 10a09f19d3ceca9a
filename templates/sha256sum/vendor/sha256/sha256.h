/* SPDX-License-Identifier: Apache-2.0
 *
 * sha256 - SHA-256 (FIPS 180-4, section 6.2) with a streaming API:
 *
 *     struct sha256_ctx ctx;
 *     uint8_t digest[SHA256_DIGEST_SIZE];
 *     sha256_init(&ctx);
 *     sha256_update(&ctx, data, len);   // any number of times, any lengths
 *     sha256_final(&ctx, digest);       // ctx must be re-initialised to reuse
 *
 * Portable C11, no allocation, independent of host byte order.
 */
#ifndef AGENTFACTORY_SHA256_H
#define AGENTFACTORY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BLOCK_SIZE 64
#define SHA256_DIGEST_SIZE 32

struct sha256_ctx {
    uint32_t h[8];                      /* intermediate hash value H(i) */
    uint64_t length;                    /* message bytes hashed so far */
    uint8_t block[SHA256_BLOCK_SIZE];   /* pending partial block */
    size_t fill;                        /* bytes used in block (0..63) */
};

void sha256_init(struct sha256_ctx *ctx);
void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len);
void sha256_final(struct sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_SIZE]);

#endif /* AGENTFACTORY_SHA256_H */
