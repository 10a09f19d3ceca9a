/* Sort kernel: N rounds of generating 65536 pseudo-random 32-bit ints (xorshift32, fixed seed, the
 * state carried across rounds) and sorting them with our own quicksort.
 *
 * Not libc's qsort: glibc and wasi-libc (musl) implement it differently (merge sort vs smoothsort),
 * which would compare two algorithms rather than two ways of running one. Integer-only, so native
 * and wasm32-wasi builds must print the same checksum for the same N.
 * Usage: sort [rounds]; prints "checksum=<16 hex> ns=<elapsed ns of the generate+sort loop>".
 */
#define _POSIX_C_SOURCE 199309L

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"

#define COUNT 65536
#define DEFAULT_ROUNDS 4L
#define SMALL 16

static void insertion_sort(uint32_t *a, ptrdiff_t n) {
    for (ptrdiff_t i = 1; i < n; i++) {
        uint32_t v = a[i];
        ptrdiff_t j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static void swap(uint32_t *a, uint32_t *b) {
    uint32_t t = *a;
    *a = *b;
    *b = t;
}

/* Median-of-three Hoare quicksort; recursing into the smaller half keeps the stack O(log n)
 * (the wasm build has a 1 MiB stack). */
static void quicksort(uint32_t *a, ptrdiff_t n) {
    while (n > SMALL) {
        ptrdiff_t mid = (n - 1) / 2;
        if (a[mid] < a[0]) swap(&a[mid], &a[0]);
        if (a[n - 1] < a[0]) swap(&a[n - 1], &a[0]);
        if (a[n - 1] < a[mid]) swap(&a[n - 1], &a[mid]);
        uint32_t pivot = a[mid];
        ptrdiff_t i = -1, j = n;
        for (;;) {
            do i++; while (a[i] < pivot);
            do j--; while (a[j] > pivot);
            if (i >= j) break;
            swap(&a[i], &a[j]);
        }
        ptrdiff_t left = j + 1; /* a[0..j] <= pivot <= a[j+1..n) */
        if (left < n - left) {
            quicksort(a, left);
            a += left;
            n -= left;
        } else {
            quicksort(a + left, n - left);
            n = left;
        }
    }
    insertion_sort(a, n);
}

int main(int argc, char **argv) {
    long n = parse_size(argc, argv, DEFAULT_ROUNDS);
    if (n < 0) {
        fprintf(stderr, "usage: sort [rounds > 0]\n");
        return 2;
    }
    uint32_t *a = malloc(COUNT * sizeof *a);
    if (!a) return 1;
    uint32_t x = 2463534242u;
    uint64_t checksum = 0xcbf29ce484222325u;
    int sorted = 1;
    int64_t start = now_ns();
    for (long r = 0; r < n; r++) {
        for (size_t i = 0; i < COUNT; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            a[i] = x;
        }
        quicksort(a, COUNT);
        for (size_t i = 0; i < COUNT; i++) {
            if (i && a[i - 1] > a[i]) sorted = 0;
            checksum = (checksum ^ a[i]) * 0x100000001b3u;
        }
    }
    int64_t elapsed = now_ns() - start;
    if (!sorted) {
        fprintf(stderr, "sort: output not sorted\n");
        return 1;
    }
    printf("checksum=%016" PRIx64 " ns=%" PRId64 "\n", checksum, elapsed);
    free(a);
    return 0;
}
