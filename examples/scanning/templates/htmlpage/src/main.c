/*
 * htmlpage: standard input (a title) to a minimal HTML page that embeds the vendored lodash asset.
 *
 * The agent never evaluates JavaScript and never calls _.template: it copies the asset bytes into
 * the page. That is why the VEX statement for CVE-2021-23337 says the vulnerable code is not in
 * its execute path.
 */
#include <stdio.h>
#include <string.h>

#include "lodash_asset.h"

static void put_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '<': fputs("&lt;", stdout); break;
        case '>': fputs("&gt;", stdout); break;
        case '&': fputs("&amp;", stdout); break;
        case '"': fputs("&quot;", stdout); break;
        default: putchar(s[i]);
        }
    }
}

int main(void) {
    char title[256];
    size_t n = fread(title, 1, sizeof title, stdin);
    while (n > 0 && (title[n - 1] == '\n' || title[n - 1] == '\r')) n--;
    fputs("<!doctype html><title>", stdout);
    put_escaped(title, n);
    fputs("</title><script>" LODASH_ASSET "</script>\n", stdout);
    return 0;
}
