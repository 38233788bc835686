/*
 * b64.c - standard base64 (RFC 4648 section 4) as POSH uses it: a strict decoder that accepts exactly one
 * spelling of each digest (padding optional, unused bits zero), and the padded encoder for normalised output.
 */
#include "posh_internal.h"

#include <stdint.h>

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a standard base64 symbol, or -1: '-', '_', '=', whitespace and the rest are not symbols. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
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

int posh_b64_decode_exact(const char *in, size_t in_len, unsigned char *out, size_t want)
{
    size_t nsym, i, o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    if ((in == NULL && in_len > 0) || (out == NULL && want > 0))
        return -1;
    if ((nsym = b64_symbol_count(in, in_len)) == SIZE_MAX)
        return -1;
    /* Check the length before writing anything, so out is never overrun whatever the input says. */
    if (nsym / 4 * 3 + (nsym % 4 == 0 ? 0 : nsym % 4 - 1) != want)
        return -1;
    for (i = 0; i < nsym; i++) {
        int v = b64_value((unsigned char)in[i]);
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
