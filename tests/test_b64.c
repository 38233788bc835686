/*
 * test_b64.c - the strict base64 decoder and the padded encoder: one spelling per digest, exact lengths.
 */
#include "posh_internal.h"

#include <criterion/criterion.h>
#include <string.h>

/* SHA-256("abc"), the RFC 4634 test vector, as publishers write it. */
#define B64_SHA256_ABC "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="

typedef struct b64_case {
    const char *name;
    const char *in;
    size_t in_len;   /* 0: strlen(in) */
    size_t want;
    int expect;      /* 0 accepted, -1 malformed */
    const char *out; /* expected bytes when accepted (want of them), NULL: not checked */
} b64_case;

static const b64_case decode_cases[] = {
    /* RFC 4648 section 10 vectors, padded and unpadded */
    {"empty", "", 0, 0, 0, ""},
    {"f padded", "Zg==", 0, 1, 0, "f"},
    {"f unpadded", "Zg", 0, 1, 0, "f"},
    {"fo padded", "Zm8=", 0, 2, 0, "fo"},
    {"fo unpadded", "Zm8", 0, 2, 0, "fo"},
    {"foo", "Zm9v", 0, 3, 0, "foo"},
    {"foob padded", "Zm9vYg==", 0, 4, 0, "foob"},
    {"foob unpadded", "Zm9vYg", 0, 4, 0, "foob"},
    {"fooba padded", "Zm9vYmE=", 0, 5, 0, "fooba"},
    {"fooba unpadded", "Zm9vYmE", 0, 5, 0, "fooba"},
    {"foobar", "Zm9vYmFy", 0, 6, 0, "foobar"},
    {"sha-256 padded", B64_SHA256_ABC, 0, 32, 0, NULL},
    {"sha-256 unpadded", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", 0, 32, 0, NULL},
    {"both specials", "+/8=", 0, 2, 0, "\xfb\xff"},
    /* exact length: one byte short or long is refused, whatever the encoding */
    {"decodes to 3, want 2", "Zm9v", 0, 2, -1, NULL},
    {"decodes to 3, want 4", "Zm9v", 0, 4, -1, NULL},
    {"sha-256 as want 31", B64_SHA256_ABC, 0, 31, -1, NULL},
    {"sha-256 as want 33", B64_SHA256_ABC, 0, 33, -1, NULL},
    {"empty, want 1", "", 0, 1, -1, NULL},
    /* padding: optional, but exactly right when present */
    {"one = where two are due", "Zg=", 0, 1, -1, NULL},
    {"three =", "Zg===", 0, 1, -1, NULL},
    {"two = where one is due", "Zm8==", 0, 2, -1, NULL},
    {"= after a full quantum", "Zm9v=", 0, 3, -1, NULL},
    {"== after a full quantum", "Zm9v==", 0, 3, -1, NULL},
    {"padding quantum alone", "====", 0, 0, -1, NULL},
    {"padding quantum after data", "Zm9v====", 0, 3, -1, NULL},
    {"x===", "Z===", 0, 0, -1, NULL},
    {"= in the middle", "Zm=v", 0, 3, -1, NULL},
    {"= at the start", "=Zm9", 0, 2, -1, NULL},
    {"padded then more", "Zg==Zm9v", 0, 4, -1, NULL},
    {"lone symbol", "Z", 0, 0, -1, NULL},
    {"lone symbol after a quantum", "Zm9vY", 0, 3, -1, NULL},
    {"sha-256 with ==", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0==", 0, 32, -1, NULL},
    /* unused bits of the last symbol must be zero (RFC 4648 3.5): otherwise a second spelling */
    {"bits set, 2 symbols", "Zp==", 0, 1, -1, NULL},
    {"bits set, 2 symbols unpadded", "Zp", 0, 1, -1, NULL},
    {"lowest bit set, 2 symbols", "ZB==", 0, 1, -1, NULL},
    {"high unused bit set, 3 symbols", "Zm+=", 0, 2, -1, NULL},
    {"lowest bit set, 3 symbols", "Zm9=", 0, 2, -1, NULL},
    {"lowest bit set, 3 symbols unpadded", "Zm9", 0, 2, -1, NULL},
    {"sha-256 last bit set", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=", 0, 32, -1, NULL},
    /* alphabet: standard only */
    {"URL-safe - and _", "-_8=", 0, 2, -1, NULL},
    {"URL-safe sha-256", "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=", 0, 32, -1, NULL},
    {"dot", "Zm9.", 0, 3, -1, NULL},
    {"non-ASCII byte", "Zm9\xc3", 0, 3, -1, NULL},
    {"high byte that is 'v' + 0x80", "Zm9\xf6", 0, 3, -1, NULL},
    /* no whitespace anywhere */
    {"space inside", "Zm 9v", 0, 3, -1, NULL},
    {"leading space", " Zm9v", 0, 3, -1, NULL},
    {"trailing newline", "Zm9v\n", 0, 3, -1, NULL},
    {"CRLF inside", "Zm\r\n9v", 0, 3, -1, NULL},
    {"tab", "Zm9v\t", 0, 3, -1, NULL},
    {"space after padding", "Zg== ", 0, 1, -1, NULL},
    /* NUL inside the counted length */
    {"NUL inside", "Zm\0v", 4, 3, -1, NULL},
    {"NUL as padding", "Zg\0\0", 4, 1, -1, NULL},
};

Test(b64, decode_table)
{
    size_t i;

    for (i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
        const b64_case *c = &decode_cases[i];
        unsigned char out[80];
        size_t len = c->in_len ? c->in_len : strlen(c->in);
        int rc;

        memset(out, 0xa5, sizeof(out));
        rc = posh_b64_decode_exact(c->in, len, out, c->want);
        cr_expect_eq(rc, c->expect, "%s: \"%s\" want %zu: got %d, expected %d", c->name, c->in, c->want, rc,
                     c->expect);
        if (rc == 0 && c->out != NULL)
            cr_expect_arr_eq(out, c->out, c->want, "%s: wrong bytes", c->name);
        /* Never a byte past want, accepted or not. */
        cr_expect_eq(out[c->want], 0xa5, "%s: wrote past want", c->name);
    }
}

Test(b64, decode_does_not_read_past_length)
{
    unsigned char out[4];

    /* "Zm9v" followed by bytes the decoder must not look at: the length is the only end. */
    cr_expect_eq(posh_b64_decode_exact("Zm9v!!!!", 4, out, 3), 0);
    cr_expect_arr_eq(out, "foo", 3);
    cr_expect_eq(posh_b64_decode_exact("Zg==garbage", 4, out, 1), 0);
    cr_expect_eq(out[0], 'f');
}

Test(b64, decode_rejects_null_arguments)
{
    unsigned char out[4];

    cr_expect_eq(posh_b64_decode_exact(NULL, 4, out, 3), -1);
    cr_expect_eq(posh_b64_decode_exact("Zm9v", 4, NULL, 3), -1);
    cr_expect_eq(posh_b64_decode_exact(NULL, 0, NULL, 0), 0, "nothing to decode into nothing");
}

/* Every digest length POSH uses, every byte value in every position: encode then decode gives back the input. */
Test(b64, round_trip_all_lengths)
{
    unsigned char in[70], back[70];
    char text[100];
    size_t len, i;

    for (len = 0; len <= sizeof(in); len++) {
        for (i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len * 11 + 0xe1);
        size_t n = posh_b64_encode(in, len, text, sizeof(text));
        cr_assert_eq(n, 4 * ((len + 2) / 3), "length %zu: encoded to %zu characters", len, n);
        cr_assert_eq(strlen(text), n);
        cr_assert_eq(posh_b64_decode_exact(text, n, back, len), 0, "length %zu: \"%s\" refused", len, text);
        cr_assert_arr_eq(back, in, len, "length %zu: round trip changed the bytes", len);
        /* The unpadded spelling of the same bytes is accepted too. */
        while (n > 0 && text[n - 1] == '=')
            n--;
        cr_assert_eq(posh_b64_decode_exact(text, n, back, len), 0, "length %zu: unpadded refused", len);
    }
}

typedef struct encode_case {
    const char *in;
    const char *out;
} encode_case;

Test(b64, encode_rfc4648_vectors)
{
    static const encode_case cases[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "+/8="},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[16];
        size_t n = posh_b64_encode((const unsigned char *)cases[i].in, strlen(cases[i].in), out, sizeof(out));
        cr_expect_str_eq(out, cases[i].out, "encode(\"%s\")", cases[i].in);
        cr_expect_eq(n, strlen(cases[i].out));
    }
}

Test(b64, encode_buffer_limits)
{
    char out[9];

    /* "foobar" needs 8 characters + NUL: exactly 9 works, 8 writes nothing but an empty string. */
    cr_expect_eq(posh_b64_encode((const unsigned char *)"foobar", 6, out, 9), 8);
    cr_expect_str_eq(out, "Zm9vYmFy");
    memset(out, 'x', sizeof(out));
    cr_expect_eq(posh_b64_encode((const unsigned char *)"foobar", 6, out, 8), 0);
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(posh_b64_encode((const unsigned char *)"foobar", 6, NULL, 9), 0);
    cr_expect_eq(posh_b64_encode((const unsigned char *)"foobar", 6, out, 0), 0);
    cr_expect_eq(posh_b64_encode(NULL, 6, out, sizeof(out)), 0);
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(posh_b64_encode(NULL, 0, out, 1), 0, "nothing to encode: an empty string");
    cr_expect_eq(out[0], '\0');
    /* A length whose encoded size would overflow size_t is refused, not wrapped. */
    cr_expect_eq(posh_b64_encode((const unsigned char *)"x", SIZE_MAX / 2, out, sizeof(out)), 0);
}

/* ---- base64url as JOSE uses it (a JWK's x5t, x5t#S256): '-' '_', no padding, unused bits zero ---- */

/* SHA-256("abc") and SHA-1("abc") as a JWK writes them. */
#define B64URL_SHA256_ABC "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
#define B64URL_SHA1_ABC "qZk-NkcGgWq6PiVxeFDCbJzQ2J0"

static const b64_case url_cases[] = {
    /* RFC 4648 section 10 vectors, unpadded */
    {"empty", "", 0, 0, 0, ""},
    {"f", "Zg", 0, 1, 0, "f"},
    {"fo", "Zm8", 0, 2, 0, "fo"},
    {"foo", "Zm9v", 0, 3, 0, "foo"},
    {"foob", "Zm9vYg", 0, 4, 0, "foob"},
    {"fooba", "Zm9vYmE", 0, 5, 0, "fooba"},
    {"foobar", "Zm9vYmFy", 0, 6, 0, "foobar"},
    {"the url alphabet's two symbols", "-_8", 0, 2, 0, "\xfb\xff"},
    {"all 62", "----", 0, 3, 0, "\xfb\xef\xbe"},
    {"all 63", "____", 0, 3, 0, "\xff\xff\xff"},
    {"sha-256", B64URL_SHA256_ABC, 0, 32, 0,
     "\xba\x78\x16\xbf\x8f\x01\xcf\xea\x41\x41\x40\xde\x5d\xae\x22\x23\xb0\x03\x61\xa3\x96\x17\x7a\x9c\xb4\x10\xff\x61"
     "\xf2\x00\x15\xad"},
    {"sha-1", B64URL_SHA1_ABC, 0, 20, 0, "\xa9\x99\x3e\x36\x47\x06\x81\x6a\xba\x3e\x25\x71\x78\x50\xc2\x6c\x9c\xd0\xd8\x9d"},
    /* no padding at all, even correct padding */
    {"f padded", "Zg==", 0, 1, -1, NULL},
    {"fo padded", "Zm8=", 0, 2, -1, NULL},
    {"sha-256 padded", B64URL_SHA256_ABC "=", 0, 32, -1, NULL},
    {"sha-1 padded", B64URL_SHA1_ABC "=", 0, 20, -1, NULL},
    {"padding quantum", "====", 0, 0, -1, NULL},
    {"= in the middle", "Zm=v", 0, 3, -1, NULL},
    /* the standard alphabet's two symbols are not base64url */
    {"+", "+_8", 0, 2, -1, NULL},
    {"/", "-/8", 0, 2, -1, NULL},
    {"sha-256 standard alphabet", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", 0, 32, -1, NULL},
    /* exact length */
    {"decodes to 3, want 2", "Zm9v", 0, 2, -1, NULL},
    {"decodes to 3, want 4", "Zm9v", 0, 4, -1, NULL},
    {"sha-256 as 31", B64URL_SHA256_ABC, 0, 31, -1, NULL},
    {"sha-256 as 33", B64URL_SHA256_ABC, 0, 33, -1, NULL},
    {"sha-256 one symbol short", "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa", 0, 32, -1, NULL},
    {"sha-256 one symbol long", B64URL_SHA256_ABC "A", 0, 32, -1, NULL},
    {"sha-1 as sha-256", B64URL_SHA1_ABC, 0, 32, -1, NULL},
    {"empty, want 1", "", 0, 1, -1, NULL},
    {"lone symbol", "Z", 0, 0, -1, NULL},
    {"lone symbol after a quantum", "Zm9vY", 0, 3, -1, NULL},
    {"lone symbol, want 1", "Z", 0, 1, -1, NULL},
    /* unused bits zero */
    {"bits set, 2 symbols", "Zh", 0, 1, -1, NULL},
    {"lowest bit set, 2 symbols", "ZB", 0, 1, -1, NULL},
    {"lowest bit set, 3 symbols", "Zm9", 0, 2, -1, NULL},
    {"sha-256 last bit set", "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa1", 0, 32, -1, NULL},
    {"sha-1 last bits set", "qZk-NkcGgWq6PiVxeFDCbJzQ2J3", 0, 20, -1, NULL},
    /* nothing else */
    {"space", "Zm 9v", 0, 3, -1, NULL},
    {"trailing newline", "Zm9\n", 0, 3, -1, NULL},
    {"dot", "Zm9.", 0, 3, -1, NULL},
    {"tilde", "Zm9~", 0, 3, -1, NULL},
    {"non-ASCII", "Zm9\xc3", 0, 3, -1, NULL},
    {"'-' + 0x80", "Zm9\xad", 0, 3, -1, NULL},
    {"NUL inside", "Zm\0v", 4, 3, -1, NULL},
};

Test(b64url, decode_table)
{
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        const b64_case *c = &url_cases[i];
        unsigned char out[80];
        size_t len = c->in_len ? c->in_len : strlen(c->in);
        int rc;

        memset(out, 0xa5, sizeof(out));
        rc = posh_b64url_decode_exact(c->in, len, out, c->want);
        cr_expect_eq(rc, c->expect, "%s: \"%s\" want %zu: got %d, expected %d", c->name, c->in, c->want, rc,
                     c->expect);
        if (rc == 0 && c->out != NULL)
            cr_expect_arr_eq(out, c->out, c->want, "%s: wrong bytes", c->name);
        cr_expect_eq(out[c->want], 0xa5, "%s: wrote past want", c->name);
    }
}

/* The two decoders never accept each other's spellings of a digest (other than the shared alphabet's). */
Test(b64url, standard_and_url_spellings_apart)
{
    unsigned char out[32];
    cr_expect_eq(posh_b64_decode_exact("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", 44, out, 32), 0);
    cr_expect_eq(posh_b64url_decode_exact("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", 44, out, 32), -1);
    cr_expect_eq(posh_b64url_decode_exact(B64URL_SHA256_ABC, 43, out, 32), 0);
    cr_expect_eq(posh_b64_decode_exact(B64URL_SHA256_ABC, 43, out, 32), -1);
}

Test(b64url, decode_arguments_and_length)
{
    unsigned char out[4];
    cr_expect_eq(posh_b64url_decode_exact("Zm9v!!!!", 4, out, 3), 0, "the length is the only end");
    cr_expect_arr_eq(out, "foo", 3);
    cr_expect_eq(posh_b64url_decode_exact(NULL, 4, out, 3), -1);
    cr_expect_eq(posh_b64url_decode_exact("Zm9v", 4, NULL, 3), -1);
    cr_expect_eq(posh_b64url_decode_exact(NULL, 0, NULL, 0), 0, "nothing to decode into nothing");
}

Test(b64url, encode_vectors)
{
    static const encode_case cases[] = {
        {"", ""},         {"f", "Zg"},           {"fo", "Zm8"},         {"foo", "Zm9v"},     {"foob", "Zm9vYg"},
        {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}, {"\xfb\xef\xbe", "----"},
        {"\xff\xff\xff", "____"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[16];
        memset(out, 'x', sizeof(out));
        size_t n = posh_b64url_encode((const unsigned char *)cases[i].in, strlen(cases[i].in), out, sizeof(out));
        cr_expect_str_eq(out, cases[i].out, "encode(\"%s\")", cases[i].in);
        cr_expect_eq(n, strlen(cases[i].out));
    }
}

/* Every length up to a SHA-512 and beyond: unpadded, url alphabet only, and the decoder gives the bytes back. */
Test(b64url, round_trip_all_lengths)
{
    unsigned char in[70], back[70];
    char text[100], std[100];
    for (size_t len = 0; len <= sizeof(in); len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 53 + len * 7 + 0xfb);
        size_t n = posh_b64url_encode(in, len, text, sizeof(text));
        cr_assert_eq(n, (len * 4 + 2) / 3, "length %zu: %zu characters", len, n);
        cr_assert_eq(strlen(text), n);
        cr_assert_null(strpbrk(text, "+/="), "length %zu: \"%s\"", len, text);
        cr_assert_eq(posh_b64url_decode_exact(text, n, back, len), 0, "length %zu: \"%s\" refused", len, text);
        cr_assert_arr_eq(back, in, len);
        /* The same bytes as posh_b64_encode spells them, translated and unpadded. */
        size_t m = posh_b64_encode(in, len, std, sizeof(std));
        while (m > 0 && std[m - 1] == '=')
            std[--m] = '\0';
        for (size_t i = 0; i < m; i++)
            std[i] = std[i] == '+' ? '-' : std[i] == '/' ? '_' : std[i];
        cr_assert_str_eq(text, std, "length %zu", len);
    }
}

Test(b64url, encode_buffer_limits)
{
    char out[9];
    /* Written through the padded encoder: the buffer must hold the padded form and its NUL. */
    cr_expect_eq(posh_b64url_encode((const unsigned char *)"f", 1, out, 5), 2);
    cr_expect_str_eq(out, "Zg");
    memset(out, 'x', sizeof(out));
    cr_expect_eq(posh_b64url_encode((const unsigned char *)"f", 1, out, 4), 0);
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(posh_b64url_encode((const unsigned char *)"f", 1, NULL, 5), 0);
    cr_expect_eq(posh_b64url_encode((const unsigned char *)"f", 1, out, 0), 0);
    cr_expect_eq(posh_b64url_encode(NULL, 0, out, 1), 0);
    cr_expect_eq(out[0], '\0');
}

/* ---- variable-length standard base64 (a JWK's x5c entries: DER certificates up to 16 KiB) ---- */

Test(b64, decode_variable_length)
{
    unsigned char out[16];
    size_t n = 99;

    memset(out, 0xa5, sizeof(out));
    cr_expect_eq(posh_b64_decode("Zm9vYmFy", 8, out, sizeof(out), &n), 0);
    cr_expect_eq(n, 6);
    cr_expect_arr_eq(out, "foobar", 6);
    cr_expect_eq(out[6], 0xa5, "nothing past the decoded length");
    cr_expect_eq(posh_b64_decode("Zm9vYg==", 8, out, sizeof(out), &n), 0);
    cr_expect_eq(n, 4);
    cr_expect_eq(posh_b64_decode("Zm9vYg", 6, out, sizeof(out), &n), 0, "padding optional");
    cr_expect_eq(n, 4);
    cr_expect_eq(posh_b64_decode("", 0, out, sizeof(out), &n), 0);
    cr_expect_eq(n, 0);
    /* cap: exactly enough, one short */
    cr_expect_eq(posh_b64_decode("Zm9vYmFy", 8, out, 6, &n), 0);
    cr_expect_eq(posh_b64_decode("Zm9vYmFy", 8, out, 5, &n), -1);
    cr_expect_eq(posh_b64_decode("Zm9vYg==", 8, out, 3, &n), -1);
    /* the strict rules of the exact decoder */
    static const char *const bad[] = {"Zg=",  "Zg===", "Zm9v=", "Z",     "Zm9vY", "Zh==", "Zm9=",
                                      "-_8=", "Zm 9v", "Zm9v\n", "Zm=v", "====",  "Zg==Zm9v"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(posh_b64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n), -1, "\"%s\"", bad[i]);
    cr_expect_eq(posh_b64_decode("Zm\0v", 4, out, sizeof(out), &n), -1);
    /* arguments */
    cr_expect_eq(posh_b64_decode("Zm9v", 4, out, sizeof(out), NULL), -1);
    cr_expect_eq(posh_b64_decode(NULL, 4, out, sizeof(out), &n), -1);
    cr_expect_eq(posh_b64_decode("Zm9v", 4, NULL, 3, &n), -1);
    cr_expect_eq(posh_b64_decode(NULL, 0, NULL, 0, &n), 0);
    cr_expect_eq(n, 0);
}

/* The x5c limit: 16384 bytes decode into 16384, 16385 do not, whatever the padding. */
Test(b64, decode_variable_length_at_16k)
{
    enum { LIMIT = 16384 };
    static unsigned char in[LIMIT + 3], out[LIMIT + 3];
    static char text[4 * ((LIMIT + 3 + 2) / 3) + 1];
    size_t n;

    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 31 + 7);
    for (size_t len = LIMIT - 2; len <= LIMIT + 2; len++) {
        size_t tl = posh_b64_encode(in, len, text, sizeof(text));
        cr_assert_gt(tl, 0);
        int want = len <= LIMIT ? 0 : -1;
        memset(out, 0xa5, sizeof(out));
        cr_expect_eq(posh_b64_decode(text, tl, out, LIMIT, &n), want, "%zu bytes, padded", len);
        if (want == 0) {
            cr_expect_eq(n, len);
            cr_expect_arr_eq(out, in, len);
        }
        cr_expect_eq(out[LIMIT], 0xa5, "%zu bytes: wrote past the cap", len);
        while (tl > 0 && text[tl - 1] == '=')
            tl--;
        cr_expect_eq(posh_b64_decode(text, tl, out, LIMIT, &n), want, "%zu bytes, unpadded", len);
    }
}
