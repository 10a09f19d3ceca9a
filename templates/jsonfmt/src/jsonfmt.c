/* SPDX-License-Identifier: Apache-2.0
 *
 * jsonfmt: strict JSON (RFC 8259) validator and pretty-printer.
 *
 *   jsonfmt            pretty-print with a 2-space indent
 *   jsonfmt --compact  print on one line without spaces
 *
 * The whole document (at most MAX_INPUT bytes) is read into a static buffer
 * and parsed twice by the same recursive-descent parser: the first pass only
 * validates, the second pass prints. So invalid input never produces partial
 * output.
 * Strings and numbers are copied through exactly as written.
 *
 * Errors: nothing on stdout, "jsonfmt: error at line L, column C: <message>"
 * on stderr, exit code 1. Lines and columns start at 1; a column counts UTF-8
 * characters. Usage errors exit with 2.
 */
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 128
#define MAX_INPUT (4u * 1024u * 1024u)

struct parser {
    const unsigned char *s;
    size_t len;
    size_t pos;
    int emit;        /* 0: validate only, 1: write to stdout */
    int compact;     /* 1: no newlines or indentation */
    size_t err_pos;  /* where the first error was found */
    char err[128];   /* its message; empty while there is none */
};

/* ---- errors ---- */

static int fail(struct parser *p, size_t at, const char *msg)
{
    p->err_pos = at;
    snprintf(p->err, sizeof p->err, "%s", msg);
    return -1;
}

/* "unexpected <what is at p->pos>, expected <expected>" */
static int unexpected(struct parser *p, const char *expected)
{
    if (p->pos >= p->len) {
        snprintf(p->err, sizeof p->err, "unexpected end of input, expected %s", expected);
    } else {
        unsigned char c = p->s[p->pos];
        if (c >= 0x20 && c < 0x7F)
            snprintf(p->err, sizeof p->err, "unexpected character '%c', expected %s", c, expected);
        else
            snprintf(p->err, sizeof p->err, "unexpected byte 0x%02X, expected %s", c, expected);
    }
    p->err_pos = p->pos;
    return -1;
}

/* ---- output (only in the printing pass) ---- */

static void out(struct parser *p, const void *b, size_t n)
{
    if (p->emit && n > 0)
        fwrite(b, 1, n, stdout); /* errors are caught by ferror/fflush in main */
}

static void newline_indent(struct parser *p, int depth)
{
    static const char spaces[] = "                                "; /* 32 */
    size_t n = (size_t)depth * 2;

    if (!p->emit || p->compact)
        return;
    putchar('\n');
    while (n > 0) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        fwrite(spaces, 1, k, stdout);
        n -= k;
    }
}

/* ---- lexical helpers ---- */

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int peek(const struct parser *p)
{
    return p->pos < p->len ? p->s[p->pos] : -1;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        need = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        need = 3;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        need = 4;
    else
        return 0;
    if (s[0] == 0xE0) lo = 0xA0;      /* overlong */
    if (s[0] == 0xED) hi = 0x9F;      /* UTF-16 surrogates */
    if (s[0] == 0xF0) lo = 0x90;      /* overlong */
    if (s[0] == 0xF4) hi = 0x8F;      /* above U+10FFFF */
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (s[i] < lo || s[i] > hi)
            return 0;
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

/* ---- grammar ---- */

static int parse_value(struct parser *p, int depth);

/* string = '"' *char '"'; copied through as written. */
static int parse_string(struct parser *p)
{
    size_t start = p->pos++; /* the opening quote */

    for (;;) {
        unsigned char c;

        if (p->pos >= p->len)
            return fail(p, start, "unterminated string");
        c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        } else if (c == '\\') {
            int e = p->pos + 1 < p->len ? p->s[p->pos + 1] : -1;
            if (e == -1)
                return fail(p, start, "unterminated string");
            if (e != 0 && strchr("\"\\/bfnrt", e) != NULL) {
                p->pos += 2;
            } else if (e == 'u') {
                for (size_t i = 2; i < 6; i++)
                    if (p->pos + i >= p->len || !is_hex(p->s[p->pos + i]))
                        return fail(p, p->pos, "invalid \\u escape, expected 4 hex digits");
                p->pos += 6;
            } else {
                return fail(p, p->pos, "invalid escape sequence in string");
            }
        } else if (c < 0x20) {
            return fail(p, p->pos, "control character in string (must be escaped)");
        } else {
            size_t n = utf8_len(p->s + p->pos, p->len - p->pos);
            if (n == 0)
                return fail(p, p->pos, "invalid UTF-8 in string");
            p->pos += n;
        }
    }
    out(p, p->s + start, p->pos - start);
    return 0;
}

/* number = [ '-' ] int [ frac ] [ exp ]; copied through as written. */
static int parse_number(struct parser *p)
{
    size_t start = p->pos;

    if (peek(p) == '-')
        p->pos++;
    if (peek(p) == '0') {
        p->pos++;
        if (is_digit(peek(p)))
            return fail(p, p->pos, "leading zeros are not allowed in numbers");
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p)))
            p->pos++;
    } else {
        return unexpected(p, "a digit");
    }
    if (peek(p) == '.') {
        p->pos++;
        if (!is_digit(peek(p)))
            return unexpected(p, "a digit after the decimal point");
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-')
            p->pos++;
        if (!is_digit(peek(p)))
            return unexpected(p, "a digit in the exponent");
        while (is_digit(peek(p)))
            p->pos++;
    }
    out(p, p->s + start, p->pos - start);
    return 0;
}

static int parse_literal(struct parser *p, const char *word)
{
    size_t n = strlen(word);

    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) {
        snprintf(p->err, sizeof p->err, "invalid literal, expected '%s'", word);
        p->err_pos = p->pos;
        return -1;
    }
    out(p, word, n);
    p->pos += n;
    return 0;
}

/* After a member of an array or object: 1 when a ',' announces another member,
 * 0 when `close` ends the container, -1 (error reported) otherwise. */
static int next_member(struct parser *p, int close, const char *expected)
{
    skip_ws(p);
    if (peek(p) == ',') {
        p->pos++;
        out(p, ",", 1);
        skip_ws(p);
        return 1;
    }
    if (peek(p) == close) {
        p->pos++;
        return 0;
    }
    unexpected(p, expected);
    return -1;
}

/* Called with p->pos on '['; depth counts the containers already open. */
static int parse_array(struct parser *p, int depth)
{
    if (depth >= MAX_DEPTH)
        return fail(p, p->pos, "nesting is deeper than 128 levels");
    p->pos++;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        out(p, "[]", 2);
        return 0;
    }
    out(p, "[", 1);
    for (;;) {
        newline_indent(p, depth + 1);
        if (parse_value(p, depth + 1) != 0)
            return -1;
        int more = next_member(p, ']', "',' or ']'");
        if (more < 0)
            return -1;
        if (!more)
            break;
    }
    newline_indent(p, depth);
    out(p, "]", 1);
    return 0;
}

/* Called with p->pos on '{'; depth counts the containers already open. */
static int parse_object(struct parser *p, int depth)
{
    if (depth >= MAX_DEPTH)
        return fail(p, p->pos, "nesting is deeper than 128 levels");
    p->pos++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        out(p, "{}", 2);
        return 0;
    }
    out(p, "{", 1);
    for (int first = 1;; first = 0) {
        if (peek(p) != '"')
            return unexpected(p, first ? "a string key or '}'" : "a string key");
        newline_indent(p, depth + 1);
        if (parse_string(p) != 0)
            return -1;
        skip_ws(p);
        if (peek(p) != ':')
            return unexpected(p, "':'");
        p->pos++;
        if (p->compact)
            out(p, ":", 1);
        else
            out(p, ": ", 2);
        skip_ws(p);
        if (parse_value(p, depth + 1) != 0)
            return -1;
        int more = next_member(p, '}', "',' or '}'");
        if (more < 0)
            return -1;
        if (!more)
            break;
    }
    newline_indent(p, depth);
    out(p, "}", 1);
    return 0;
}

/* Called with p->pos after any whitespace. */
static int parse_value(struct parser *p, int depth)
{
    int c = peek(p);

    switch (c) {
    case '{': return parse_object(p, depth);
    case '[': return parse_array(p, depth);
    case '"': return parse_string(p);
    case 't': return parse_literal(p, "true");
    case 'f': return parse_literal(p, "false");
    case 'n': return parse_literal(p, "null");
    default:
        if (c == '-' || is_digit(c))
            return parse_number(p);
        return unexpected(p, "a JSON value");
    }
}

static int parse_document(struct parser *p)
{
    p->pos = 0;
    skip_ws(p);
    if (parse_value(p, 0) != 0)
        return -1;
    skip_ws(p);
    if (p->pos < p->len)
        return fail(p, p->pos, "unexpected data after the JSON value");
    out(p, "\n", 1);
    return 0;
}

/* ---- input ---- */

/* Reads all of stdin into a static buffer (no allocation, so the memory use
 * is fixed). Returns 0, or 1 on read error, 2 if larger than MAX_INPUT. */
static int read_all(const unsigned char **buf, size_t *len)
{
    static unsigned char input[MAX_INPUT + 1]; /* +1 detects oversized input */
    size_t n = 0, got;

    do {
        got = fread(input + n, 1, sizeof input - n, stdin);
        n += got;
    } while (got > 0 && n < sizeof input);
    if (ferror(stdin))
        return 1;
    if (n > MAX_INPUT)
        return 2;
    *buf = input;
    *len = n;
    return 0;
}

int main(int argc, char **argv)
{
    static char obuf[65536];
    struct parser p;
    const unsigned char *input = NULL;
    size_t len = 0;
    int compact = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--compact") == 0) {
            compact = 1;
        } else {
            fprintf(stderr, "jsonfmt: unknown argument '%s'\nusage: jsonfmt [--compact] < input.json\n",
                    argv[i]);
            return 2;
        }
    }

    switch (read_all(&input, &len)) {
    case 0:
        break;
    case 2:
        fprintf(stderr, "jsonfmt: input is larger than %u bytes\n", MAX_INPUT);
        return 1;
    default:
        fputs("jsonfmt: error reading standard input\n", stderr);
        return 1;
    }

    memset(&p, 0, sizeof p);
    p.s = input;
    p.len = len;
    p.compact = compact;

    if (parse_document(&p) != 0) { /* pass 1: validate */
        unsigned long line = 1, col = 1;
        for (size_t i = 0; i < p.err_pos; i++) {
            if (input[i] == '\n') {
                line++;
                col = 1;
            } else if ((input[i] & 0xC0) != 0x80) { /* not a UTF-8 continuation byte */
                col++;
            }
        }
        fprintf(stderr, "jsonfmt: error at line %lu, column %lu: %s\n", line, col, p.err);
        return 1;
    }

    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    p.emit = 1;
    if (parse_document(&p) != 0 || fflush(stdout) != 0 || ferror(stdout)) { /* pass 2: print */
        fputs("jsonfmt: error writing standard output\n", stderr);
        return 1;
    }
    return 0;
}
