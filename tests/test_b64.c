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
