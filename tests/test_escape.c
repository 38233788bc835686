/*
 * test_escape.c - posh_escape(), the one helper every message passes through before it leaves the library:
 * each byte outside printable ASCII as \xHH, the backslash doubled in raw text, truncation between escapes.
 */
#include "posh_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

struct escape_case {
    const char *in;
    posh_escape_mode mode;
    const char *want;
};

static const struct escape_case cases[] = {
    {"", POSH_ESCAPE_RAW, ""},
    {"", POSH_ESCAPE_MESSAGE, ""},
    {"https://foo.example.com/x.json", POSH_ESCAPE_RAW, "https://foo.example.com/x.json"},
    {" ~", POSH_ESCAPE_RAW, " ~"},                        /* the ends of the printable range stay */
    {"\x1b[2J", POSH_ESCAPE_RAW, "\\x1b[2J"},
    {"\x7f", POSH_ESCAPE_RAW, "\\x7f"},
    {"\x80\xff", POSH_ESCAPE_RAW, "\\x80\\xff"},
    {"\xc3\xa9", POSH_ESCAPE_RAW, "\\xc3\\xa9"},         /* UTF-8 too: one escape per byte */
    {"a\\b", POSH_ESCAPE_RAW, "a\\\\b"},                 /* raw text: the backslash doubled */
    {"\\x1b", POSH_ESCAPE_RAW, "\\\\x1b"},               /* a literal "\x1b" cannot pass for an escape */
    {"a\\b", POSH_ESCAPE_MESSAGE, "a\\b"},               /* an escaped message is not escaped twice */
    {"\\x1b\x1b", POSH_ESCAPE_MESSAGE, "\\x1b\\x1b"},    /* but its stray control bytes are */
    {NULL, POSH_ESCAPE_RAW, ""},
};

Test(escape, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        size_t n = posh_escape(out, sizeof(out), cases[i].in, cases[i].mode);
        cr_expect_str_eq(out, cases[i].want, "case %zu", i);
        cr_expect_eq(n, strlen(cases[i].want), "case %zu: length", i);
    }
}

Test(escape, every_byte)
{
    for (int c = 1; c < 256; c++) {
        char in[2] = {(char)c, '\0'}, out[8], want[8];
        if (c >= 0x20 && c <= 0x7e && c != '\\')
            snprintf(want, sizeof(want), "%c", c);
        else if (c == '\\')
            snprintf(want, sizeof(want), "\\\\");
        else
            snprintf(want, sizeof(want), "\\x%02x", c);
        posh_escape(out, sizeof(out), in, POSH_ESCAPE_RAW);
        cr_expect_str_eq(out, want, "byte 0x%02x", c);
    }
}

/*
 * Every buffer size from 0 to past the whole: the output is the longest run of whole sequences that fits with
 * its NUL, nothing is written past dstlen, and an escape is never cut.
 */
Test(escape, truncation_at_each_boundary)
{
    static const char in[] = "a\x1b" "b\\c\xff";
    static const char full[] = "a\\x1bb\\\\c\\xff";
    static const size_t ends[] = {0, 1, 5, 6, 8, 9, 13}; /* where each whole sequence ends in full */
    const size_t nends = sizeof(ends) / sizeof(ends[0]);

    for (size_t dstlen = 0; dstlen <= sizeof(full) + 1; dstlen++) {
        char buf[sizeof(full) + 8];
        size_t want = 0, n;
        memset(buf, '#', sizeof(buf));
        for (size_t k = 0; k < nends; k++)
            if (dstlen > 0 && ends[k] <= dstlen - 1)
                want = ends[k];
        n = posh_escape(buf, dstlen, in, POSH_ESCAPE_RAW);
        for (size_t k = dstlen; k < sizeof(buf); k++)
            cr_assert_eq(buf[k], '#', "dstlen %zu: byte %zu written past the end", dstlen, k);
        if (dstlen == 0) {
            cr_expect_eq(n, 0);
            continue;
        }
        cr_expect_eq(n, want, "dstlen %zu: %zu bytes, want %zu", dstlen, n, want);
        cr_expect_eq(buf[n], '\0', "dstlen %zu: NUL-terminated", dstlen);
        cr_expect(strncmp(buf, full, want) == 0, "dstlen %zu: \"%s\" is a prefix of \"%s\"", dstlen, buf, full);
    }
}
