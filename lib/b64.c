/*
 * b64.c - base64 as POSH uses it: standard base64 (RFC 4648 section 4; fingerprints, a JWK's x5c) with a strict
 * decoder that accepts exactly one spelling of each value (padding optional, unused bits zero) and the padded
 * encoder for normalised output; base64url without padding (RFC 7515 section 2; a JWK's x5t, x5t#S256), just as
 * strict.
 */
#include "posh_internal.h"

#include <stdint.h>

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * The 6-bit value of a symbol of the standard (url: the base64url) alphabet, or -1: the other alphabet's two
 * symbols, '=', whitespace and the rest are not symbols.
 */
static int b64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/*
 * Split in into symbols and padding. Padding is optional, but when present it must complete the last quantum
 * exactly ("xx==", "xxx="): with at most two '=' taken off a multiple of 4, that is the only way it can end.
 * A third '=' stays among the symbols and is rejected there. Returns the number of symbols, or SIZE_MAX.
 */
static size_t b64_symbol_count(const char *in, size_t in_len)
{
    size_t pad = 0;

    while (pad < 2 && pad < in_len && in[in_len - 1 - pad] == '=')
        pad++;
    if (pad > 0 && in_len % 4 != 0)
        return SIZE_MAX;
    if ((in_len - pad) % 4 == 1)
        return SIZE_MAX; /* a lone last symbol carries 6 bits: never a whole byte */
    return in_len - pad;
}

/* The number of bytes nsym symbols carry (nsym % 4 != 1, which b64_symbol_count rules out). */
static size_t decoded_len(size_t nsym)
{
    return nsym / 4 * 3 + (nsym % 4 == 0 ? 0 : nsym % 4 - 1);
}

/* Decode nsym symbols of the alphabet into out (decoded_len(nsym) bytes). 0, or -1 when malformed. */
static int decode_symbols(const char *in, size_t nsym, bool url, unsigned char *out)
{
    size_t i, o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    for (i = 0; i < nsym; i++) {
        int v = b64_value((unsigned char)in[i], url);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* RFC 4648 3.5: the unused bits of the last symbol are zero; anything else is a second spelling. */
    return acc == 0 ? 0 : -1;
}

int posh_b64_decode_exact(const char *in, size_t in_len, unsigned char *out, size_t want)
{
    size_t nsym;

    if ((in == NULL && in_len > 0) || (out == NULL && want > 0))
        return -1;
    if ((nsym = b64_symbol_count(in, in_len)) == SIZE_MAX)
        return -1;
    /* Check the length before writing anything, so out is never overrun whatever the input says. */
    if (decoded_len(nsym) != want)
        return -1;
    return decode_symbols(in, nsym, false, out);
}

int posh_b64_decode(const char *in, size_t in_len, unsigned char *out, size_t cap, size_t *out_len)
{
    size_t nsym;

    if ((in == NULL && in_len > 0) || (out == NULL && cap > 0) || out_len == NULL)
        return -1;
    if ((nsym = b64_symbol_count(in, in_len)) == SIZE_MAX || decoded_len(nsym) > cap)
        return -1;
    *out_len = decoded_len(nsym);
    return decode_symbols(in, nsym, false, out);
}

int posh_b64url_decode_exact(const char *in, size_t in_len, unsigned char *out, size_t want)
{
    if ((in == NULL && in_len > 0) || (out == NULL && want > 0))
        return -1;
    /* No padding in base64url as JOSE uses it (RFC 7515 section 2), and never a lone last symbol. */
    if (in_len % 4 == 1 || decoded_len(in_len) != want)
        return -1;
    return decode_symbols(in, in_len, true, out);
}

size_t posh_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    size_t n = posh_b64_encode(in, len, out, outlen), i;
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    for (i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return n;
}

size_t posh_b64_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    size_t i, o = 0;

    if (out == NULL || outlen == 0)
        return 0;
    out[0] = '\0';
    if ((in == NULL && len > 0) || len > (SIZE_MAX / 4 - 1) * 3 || outlen < 4 * ((len + 2) / 3) + 1)
        return 0;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t q = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[q >> 18];
        out[o++] = b64_alphabet[(q >> 12) & 63];
        out[o++] = b64_alphabet[(q >> 6) & 63];
        out[o++] = b64_alphabet[q & 63];
    }
    if (i < len) {
        uint32_t q = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64_alphabet[q >> 18];
        out[o++] = b64_alphabet[(q >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(q >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}
