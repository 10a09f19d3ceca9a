/* SPDX-License-Identifier: Apache-2.0 */
#include "utf8.h"

#define UTF8_REPLACEMENT 0xFFFDu

utf8_status utf8_decode(const unsigned char *s, size_t len, uint32_t *cp, size_t *used)
{
    unsigned char b0 = s[0];
    size_t need;            /* total length announced by the lead byte */
    uint32_t c;             /* code point bits gathered so far */
    unsigned char lo = 0x80; /* allowed range of the second byte; RFC 3629 narrows */
    unsigned char hi = 0xBF; /* it for E0, ED, F0 and F4 (overlongs, surrogates, > U+10FFFF) */

    *cp = UTF8_REPLACEMENT;
    *used = 1;

    if (b0 < 0x80) {
        *cp = b0;
        return UTF8_OK;
    } else if (b0 < 0xC2) {
        return UTF8_INVALID; /* continuation byte, or overlong 2-byte lead C0/C1 */
    } else if (b0 < 0xE0) {
        need = 2;
        c = b0 & 0x1Fu;
    } else if (b0 < 0xF0) {
        need = 3;
        c = b0 & 0x0Fu;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 < 0xF5) {
        need = 4;
        c = b0 & 0x07u;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        return UTF8_INVALID; /* F5..FF never appear in UTF-8 */
    }

    for (size_t i = 1; i < need; i++) {
        if (i >= len) {
            *used = len;
            return UTF8_INCOMPLETE;
        }
        if (s[i] < lo || s[i] > hi)
            return UTF8_INVALID;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (s[i] & 0x3Fu);
    }

    *cp = c;
    *used = need;
    return UTF8_OK;
}
