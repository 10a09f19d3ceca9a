/* SPDX-License-Identifier: Apache-2.0
 *
 * wordstats: reads all of standard input and prints one line of JSON:
 *   {"lines":N,"words":N,"bytes":N,"chars":N,"longest_line":N}
 *
 *   lines         number of lines: every '\n' ends one, and a final line
 *                 without '\n' counts too ("a\nb" has 2 lines, "" has 0)
 *   words         runs of bytes separated by ASCII whitespace
 *                 (space, \t, \n, \v, \f, \r)
 *   bytes         size of the input
 *   chars         UTF-8 code points; each byte that is not part of a
 *                 well-formed sequence counts as one char
 *   longest_line  chars in the longest line, not counting its '\n'
 *
 * Input is streamed through a fixed buffer, so its size is not limited.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

#define CHUNK 65536

struct stats {
    unsigned long long lines, words, bytes, chars, longest_line;
    unsigned long long line_chars; /* chars in the current, unfinished line */
    int in_word;
};

/* Accounts one char: a decoded code point, or one invalid byte (cp = U+FFFD). */
static void account(struct stats *st, uint32_t cp, size_t nbytes)
{
    int space = cp == ' ' || (cp >= '\t' && cp <= '\r'); /* \t \n \v \f \r */

    st->bytes += nbytes;
    st->chars++;
    if (!space && !st->in_word)
        st->words++;
    st->in_word = !space;
    if (cp == '\n') {
        st->lines++;
        if (st->line_chars > st->longest_line)
            st->longest_line = st->line_chars;
        st->line_chars = 0;
    } else {
        st->line_chars++;
    }
}

int main(int argc, char **argv)
{
    /* +UTF8_MAX_SEQUENCE: room for an unfinished sequence carried over. */
    static unsigned char buf[CHUNK + UTF8_MAX_SEQUENCE];
    struct stats st = {0};
    size_t carry = 0; /* bytes of an unfinished sequence kept at buf[0..carry) */
    int eof = 0;

    (void)argv;
    if (argc > 1) {
        fputs("wordstats: no arguments expected; the text is read from standard input\n", stderr);
        return 2;
    }

    while (!eof) {
        size_t n = fread(buf + carry, 1, CHUNK, stdin);
        size_t len = carry + n, i = 0;

        if (n < CHUNK) { /* short read: end of input or an error */
            if (ferror(stdin)) {
                fputs("wordstats: error reading standard input\n", stderr);
                return 1;
            }
            eof = 1;
        }
        while (i < len) {
            uint32_t cp;
            size_t used;
            utf8_status r = utf8_decode(buf + i, len - i, &cp, &used);

            if (r == UTF8_INCOMPLETE) {
                if (!eof)
                    break; /* finish the sequence after the next read */
                used = 1;  /* truncated by end of input: first byte is invalid */
            }
            account(&st, cp, used);
            i += used;
        }
        carry = len - i; /* at most UTF8_MAX_SEQUENCE - 1 */
        memmove(buf, buf + i, carry);
    }

    if (st.line_chars > 0) { /* final line without '\n' */
        st.lines++;
        if (st.line_chars > st.longest_line)
            st.longest_line = st.line_chars;
    }

    if (printf("{\"lines\":%llu,\"words\":%llu,\"bytes\":%llu,\"chars\":%llu,\"longest_line\":%llu}\n",
               st.lines, st.words, st.bytes, st.chars, st.longest_line) < 0 ||
        fflush(stdout) != 0) {
        fputs("wordstats: error writing standard output\n", stderr);
        return 1;
    }
    return 0;
}
