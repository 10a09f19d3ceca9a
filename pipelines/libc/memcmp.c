/* memcmp and bcmp for every C agent, linked in by the pipeline (pipelines/toolchain.py).
 *
 * zig 0.17 links wasm32-wasi programs with compiler_rt's memcmp, a byte loop: every byte costs a load, a
 * compare and, under wasmtime's epoch interruption, an epoch check at the loop header. glibc's memcmp,
 * which the same C gets natively, compares 32 bytes at a time. Upstream wasi-libc has a SIMD memcmp behind
 * __wasm_simd128__ for the same reason (WebAssembly/wasi-libc#603); this is the pipeline's own.
 *
 * Every load stays inside [p, p + n): short sizes use two overlapping loads (the first and the last
 * 4 or 8 bytes), longer ones 16-byte blocks (SIMD under -msimd128, which the pipeline pins; two 64-bit
 * words without it) and one overlapping last block, so a buffer that ends at the end of linear memory
 * never traps. The first differing byte is found in the little-endian word (wasm is little-endian) and
 * compared as unsigned char, as C requires.
 *
 * Both symbols are weak, so an agent that defines its own memcmp or bcmp keeps it; this object comes
 * before compiler_rt on the link line, so it wins over compiler_rt's (also weak) byte loop.
 */
#include <stddef.h>
#include <stdint.h>
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/* The difference of the first (lowest-addressed) differing bytes of two unequal little-endian words. */
static inline int first_difference(uint64_t a, uint64_t b) {
    unsigned shift = (unsigned)__builtin_ctzll(a ^ b) & ~7u;
    return (int)((a >> shift) & 0xffu) - (int)((b >> shift) & 0xffu);
}

/* The first two words, then the second two: the difference of the first differing bytes, or 0. For two
 * overlapping loads the bytes they share are equal once the first pair is, so the second pair's first
 * difference is the first of all. */
static inline int compare_pairs(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    if (a != b) return first_difference(a, b);
    return c == d ? 0 : first_difference(c, d);
}

/* 0 when the 16 bytes at l and r are equal, else the difference of the first differing bytes. */
static inline int compare16(const unsigned char *l, const unsigned char *r) {
#ifdef __wasm_simd128__
    uint32_t unequal = ~(uint32_t)wasm_i8x16_bitmask(wasm_i8x16_eq(wasm_v128_load(l), wasm_v128_load(r))) & 0xffffu;
    if (!unequal) return 0;
    unsigned k = (unsigned)__builtin_ctz(unequal);
    return (int)l[k] - (int)r[k];
#else /* a build without -msimd128: two 64-bit words */
    return compare_pairs(load64(l), load64(r), load64(l + 8), load64(r + 8));
#endif
}

__attribute__((weak)) int memcmp(const void *vl, const void *vr, size_t n) {
    const unsigned char *l = vl, *r = vr;
    if (n >= 16) {
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            int d = compare16(l + i, r + i);
            if (d) return d;
        }
        /* The bytes before i are equal, so the first difference in the last 16 is the first of all. */
        return i == n ? 0 : compare16(l + n - 16, r + n - 16);
    }
    if (n >= 8) return compare_pairs(load64(l), load64(r), load64(l + n - 8), load64(r + n - 8));
    if (n >= 4) return compare_pairs(load32(l), load32(r), load32(l + n - 4), load32(r + n - 4));
    if (n == 0) return 0;
    int d = (int)l[0] - (int)r[0];
    if (d || n == 1) return d;
    d = (int)l[1] - (int)r[1];
    if (d || n == 2) return d;
    return (int)l[2] - (int)r[2];
}

__attribute__((weak)) int bcmp(const void *l, const void *r, size_t n) {
    return memcmp(l, r, n);
}
