/* Strings kernel: N passes of tokenizing a generated 256 KiB English-like text and counting words
 * (case-folded) in an open-addressing hash table.
 *
 * The text is built before the clock starts from a fixed 4096-word vocabulary drawn with xorshift32,
 * skewed so that a few words are frequent, as in real text. Each pass flips the case of one letter,
 * which changes no count, so the compiler cannot reuse an earlier pass. Integer-only, so native and
 * wasm32-wasi builds must print the same checksum for the same N.
 * Usage: strings [passes]; prints "checksum=<16 hex> ns=<elapsed ns of the counting loop>".
 */
#define _POSIX_C_SOURCE 199309L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define TEXT_BYTES (256 * 1024)
#define VOCAB 4096
#define MAX_WORD 10
#define TABLE 16384 /* power of two, > 2 * VOCAB */
#define KEY 16
#define DEFAULT_PASSES 8L

typedef struct {
    uint64_t hash;
    uint32_t count;
    uint32_t len;
    char key[KEY];
} entry;

static uint32_t rng = 2463534242u;

static uint32_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static int is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static size_t generate(char *text) {
    static char vocab[VOCAB][MAX_WORD + 1];
    for (int k = 0; k < VOCAB; k++) {
        uint32_t len = 1 + next() % MAX_WORD;
        for (uint32_t i = 0; i < len; i++) vocab[k][i] = (char)('a' + next() % 26);
        vocab[k][len] = '\0';
    }
    static const char *const separators[4] = {", ", ". ", "\n", " - "};
    size_t pos = 0;
    while (pos < TEXT_BYTES - 32) {
        uint32_t r = next();
        uint32_t idx = ((r & 0xfffu) * ((r >> 12) & 0xfffu)) >> 12; /* product of two uniforms: skewed */
        size_t len = strlen(vocab[idx]);
        memcpy(text + pos, vocab[idx], len);
        if (next() % 8 == 0) text[pos] = (char)(text[pos] - 'a' + 'A');
        pos += len;
        uint32_t s = next() % 16;
        const char *sep = s < 4 ? separators[s] : " ";
        size_t slen = strlen(sep);
        memcpy(text + pos, sep, slen);
        pos += slen;
    }
    text[pos] = '\0';
    return pos;
}

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3u; }

/* One pass: count every word; fold distinct, total, the top count and the hash-weighted counts. */
static uint64_t count_words(const char *text, size_t n, entry *table) {
    memset(table, 0, TABLE * sizeof *table);
    uint64_t total = 0, distinct = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && !is_letter((unsigned char)text[i])) i++;
        if (i >= n) break;
        char word[KEY];
        uint32_t len = 0;
        uint64_t h = 0xcbf29ce484222325u;
        for (; i < n && is_letter((unsigned char)text[i]); i++, len++) {
            char c = (char)(text[i] | 0x20); /* ASCII lower case */
            if (len < KEY) word[len] = c;
            h = (h ^ (unsigned char)c) * 0x100000001b3u;
        }
        uint32_t keep = len < KEY ? len : KEY;
        for (size_t slot = (size_t)h & (TABLE - 1);; slot = (slot + 1) & (TABLE - 1)) {
            entry *e = &table[slot];
            if (e->count == 0) {
                e->hash = h;
                e->count = 1;
                e->len = len;
                memcpy(e->key, word, keep);
                distinct++;
                break;
            }
            if (e->hash == h && e->len == len && memcmp(e->key, word, keep) == 0) {
                e->count++;
                break;
            }
        }
        total++;
    }
    uint64_t top = 0, weighted = 0;
    for (size_t s = 0; s < TABLE; s++) {
        if (table[s].count > top) top = table[s].count;
        weighted += table[s].hash * table[s].count;
    }
    return mix(mix(mix(mix(0xcbf29ce484222325u, distinct), total), top), weighted);
}

int main(int argc, char **argv) {
    long n = parse_size(argc, argv, DEFAULT_PASSES);
    if (n < 0) {
        fprintf(stderr, "usage: strings [passes > 0]\n");
        return 2;
    }
    char *text = malloc(TEXT_BYTES);
    entry *table = malloc(TABLE * sizeof *table);
    if (!text || !table) return 1;
    size_t len = generate(text);
    uint64_t checksum = 0xcbf29ce484222325u;
    int64_t start = now_ns();
    for (long p = 0; p < n; p++) {
        size_t at = (size_t)p * 7919u % len;
        if (is_letter((unsigned char)text[at])) text[at] ^= 0x20; /* flip case: no count changes */
        checksum = mix(checksum, count_words(text, len, table));
    }
    int64_t elapsed = now_ns() - start;
    printf("checksum=%016" PRIx64 " ns=%" PRId64 "\n", checksum, elapsed);
    free(table);
    free(text);
    return 0;
}
