/* SPDX-License-Identifier: Apache-2.0
 *
 * utf8 - a tiny, allocation-free UTF-8 decoder (RFC 3629).
 *
 * Only well-formed sequences are accepted: no overlong forms, no UTF-16
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF. The decoder works on
 * a byte window so that callers can stream input in chunks: a sequence cut
 * by the end of the window is reported as UTF8_INCOMPLETE instead of invalid.
 */
#ifndef AGENTFACTORY_UTF8_H
#define AGENTFACTORY_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Longest UTF-8 sequence, in bytes. */
#define UTF8_MAX_SEQUENCE 4

typedef enum {
    /* A code point was decoded; *used is its length (1..4). */
    UTF8_OK = 0,
    /* s[0] does not start a well-formed sequence; *used is 1.
     * The caller should count or replace that one byte and continue after it. */
    UTF8_INVALID = 1,
    /* s[0..len) is a well-formed but unfinished prefix; *used is len (< 4).
     * Call again once more bytes are available; at end of input, treat s[0]
     * as UTF8_INVALID. */
    UTF8_INCOMPLETE = 2
} utf8_status;

/* Decodes the code point at the start of s[0..len). len must be at least 1.
 * *cp receives the code point for UTF8_OK and U+FFFD otherwise. */
utf8_status utf8_decode(const unsigned char *s, size_t len, uint32_t *cp, size_t *used);

#endif /* AGENTFACTORY_UTF8_H */
