/* What every compute kernel shares: a monotonic clock and its one command-line argument.
 * Included by each kernel (quoted, next to it); the runtime benchmark copies it into each kernel's template. */
#ifndef KERNEL_HARNESS_H
#define KERNEL_HARNESS_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* argv[1] as a positive work size; `fallback` without one, -1 for anything else. */
static long parse_size(int argc, char **argv, long fallback) {
    if (argc < 2) return fallback;
    char *end = NULL;
    long v = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || v <= 0) return -1;
    return v;
}

#endif
