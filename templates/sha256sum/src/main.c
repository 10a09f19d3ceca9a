/* SPDX-License-Identifier: Apache-2.0
 *
 * sha256sum: prints the SHA-256 digest of all of standard input in the
 * format of coreutils' sha256sum reading stdin: "<64 hex digits>  -\n".
 * Input is streamed in 64 KiB chunks, so its size is not limited.
 */
#include <stdio.h>
#include <string.h>

#include "sha256.h"

#define CHUNK 65536

int main(int argc, char **argv)
{
    static unsigned char buf[CHUNK];
    static const char hex[] = "0123456789abcdef";
    struct sha256_ctx ctx;
    unsigned char digest[SHA256_DIGEST_SIZE];
    char line[2 * SHA256_DIGEST_SIZE + 4]; /* hex, "  -\n" */
    size_t n;

    /* Only standard input can be hashed; "-" names it explicitly. */
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "-") != 0)) {
        fputs("sha256sum: only standard input can be hashed\nusage: sha256sum [-] < input\n", stderr);
        return 2;
    }

    sha256_init(&ctx);
    do {
        n = fread(buf, 1, sizeof buf, stdin);
        sha256_update(&ctx, buf, n);
    } while (n == sizeof buf);
    if (ferror(stdin)) {
        fputs("sha256sum: error reading standard input\n", stderr);
        return 1;
    }
    sha256_final(&ctx, digest);

    for (size_t i = 0; i < SHA256_DIGEST_SIZE; i++) {
        line[2 * i] = hex[digest[i] >> 4];
        line[2 * i + 1] = hex[digest[i] & 0x0F];
    }
    memcpy(line + 2 * SHA256_DIGEST_SIZE, "  -\n", 4);
    if (fwrite(line, 1, sizeof line, stdout) != sizeof line || fflush(stdout) != 0) {
        fputs("sha256sum: error writing standard output\n", stderr);
        return 1;
    }
    return 0;
}
