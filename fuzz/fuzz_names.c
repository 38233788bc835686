/*
 * fuzz_names.c - the small parsers of names.c and b64.c, each against an oracle written here from the rules:
 *   0 posh_b64_decode_exact: accepted exactly when the input is the canonical base64 of some want bytes (padded
 *     or not), and then those bytes; the output buffer is exactly want bytes, so any overrun is caught;
 *   1 posh_b64_encode: padded canonical text that decodes back, padded or not, only at the right length;
 *   2 posh_domain_normalize: a reference validator; the output is lower case [a-z0-9.-], normalises to itself,
 *     becomes a URL only in normalised form, and is no address to inet_aton(), getaddrinfo() or curl;
 *   3 posh_service_parse + posh_build_url: a reference parser; both URL layouts built exactly and accepted;
 *   4 posh_url_is_https: a reference checker, and curl's own URL parser must see https, no userinfo, the
 *     same host and port.
 * The first input byte chooses the function, the second a size where one is needed; the rest is the input.
 */
#include "fuzz_check.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <strings.h>

#include <curl/curl.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* The input as a C string (an embedded NUL ends it early, as it would for a caller). */
static char *cstr(const uint8_t *data, size_t size)
{
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* ---- base64 ---- */

static int b64_sym(unsigned char c)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;
    return p != NULL ? (int)(p - alphabet) : -1;
}

/*
 * The only bytes in could stand for: at most two trailing '=' set aside, every other character a symbol,
 * the bits read left to right into whole bytes. 0 and the count in *n, or -1 if a character is not a symbol.
 */
static int lenient_decode(const char *in, size_t len, unsigned char *out, size_t *n)
{
    size_t i, body = len, bits = 0;
    uint32_t acc = 0;

    while (body > 0 && len - body < 2 && in[body - 1] == '=')
        body--;
    *n = 0;
    for (i = 0; i < body; i++) {
        int v = b64_sym((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[(*n)++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return 0;
}

static void fuzz_b64_decode(size_t want, const char *in, size_t len)
{
    unsigned char *out = xmalloc(want), *cand = xmalloc(len), *copy;
    char *canon = xmalloc(4 * (want + 2) / 3 + 5);
    size_t n = 0, clen;
    int rc = posh_b64_decode_exact(in, len, out, want);
    int oracle = 0;

    /* The oracle: the candidate bytes, re-encoded, must give back the input exactly (with or without '='). */
    if (lenient_decode(in, len, cand, &n) == 0 && n == want) {
        clen = posh_b64_encode(cand, n, canon, 4 * ((n + 2) / 3) + 1);
        FUZZ_ASSERT(clen == 4 * ((n + 2) / 3), "encode of %zu bytes gave %zu characters", n, clen);
        if (clen == len && memcmp(canon, in, len) == 0)
            oracle = 1;
        while (clen > 0 && canon[clen - 1] == '=')
            clen--;
        if (clen == len && memcmp(canon, in, len) == 0)
            oracle = 1;
    }
    FUZZ_ASSERT((rc == 0) == oracle, "decode of %zu characters into %zu bytes: %d, the oracle says %d", len, want,
                rc, oracle);
    if (rc == 0)
        FUZZ_ASSERT(memcmp(out, cand, want) == 0, "decoded bytes differ from the oracle's");
    /* A one-byte-shorter or -longer want never accepts the same text. */
    if (rc == 0) {
        copy = xmalloc(want + 1);
        FUZZ_ASSERT(posh_b64_decode_exact(in, len, copy, want + 1) != 0, "accepted at two lengths");
        if (want > 0)
            FUZZ_ASSERT(posh_b64_decode_exact(in, len, copy, want - 1) != 0, "accepted at two lengths");
        free(copy);
    }
    free(canon);
    free(cand);
    free(out);
}

static void fuzz_b64_encode(const unsigned char *in, size_t len, size_t short_by)
{
    size_t need = 4 * ((len + 2) / 3) + 1, n, i, unpadded;
    char *out = xmalloc(need), *small;
    unsigned char *back = xmalloc(len + 1);

    n = posh_b64_encode(in, len, out, need);
    FUZZ_ASSERT(n == need - 1 && out[n] == '\0', "encoded %zu bytes into %zu characters", len, n);
    for (i = 0; i < n; i++)
        FUZZ_ASSERT(b64_sym((unsigned char)out[i]) >= 0 || (out[i] == '=' && i >= n - 2), "character %zu", i);
    FUZZ_ASSERT(posh_b64_decode_exact(out, n, back, len) == 0 && memcmp(back, in, len) == 0, "padded round trip");
    for (unpadded = n; unpadded > 0 && out[unpadded - 1] == '='; unpadded--)
        ;
    FUZZ_ASSERT(posh_b64_decode_exact(out, unpadded, back, len) == 0 && memcmp(back, in, len) == 0,
                "unpadded round trip");
    FUZZ_ASSERT(posh_b64_decode_exact(out, n, back, len + 1) != 0, "decoded at the wrong length");
    /* A buffer too small by short_by bytes: nothing written past it, 0 returned. */
    if (short_by > 0 && short_by <= need) {
        size_t cap = need - short_by;
        small = xmalloc(cap);
        FUZZ_ASSERT(posh_b64_encode(in, len, small, cap) == 0, "encoded into a short buffer");
        FUZZ_ASSERT(cap == 0 || small[0] == '\0', "short buffer not emptied");
        free(small);
    }
    free(back);
    free(out);
}

/* ---- domains ---- */

static int ldh_label(const char *s, size_t len)
{
    size_t i;

    if (len < 1 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-'))
            return 0;
    }
    return 1;
}

/*
 * Would an IPv4 parser take this label as a number: decimal or octal digits only, or "0x"/"0X" and hex digits
 * (none at all included)? Written from the rule, with the C library's classifiers.
 */
static int numeric_label(const char *s, size_t len)
{
    size_t k = 0;

    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (k = 2; k < len && isxdigit((unsigned char)s[k]); k++)
            ;
        return k == len;
    }
    while (k < len && isdigit((unsigned char)s[k]))
        k++;
    return k == len;
}

/* The reference: how many characters of s make the name (one trailing dot dropped), or 0 if it is not one. */
static size_t ref_domain(const char *s)
{
    size_t len = strlen(s), start = 0, i;
    int numeric = 0;

    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > POSH_MAX_DOMAIN_LEN)
        return 0;
    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (!ldh_label(s + start, i - start))
                return 0;
            numeric = numeric_label(s + start, i - start);
            start = i + 1;
        }
    }
    return numeric ? 0 : len; /* a numeric last label makes an IPv4 address, not a name */
}

/* An accepted name is no address to the C library or to curl: curl keeps it as the URL's host, unchanged. */
static void name_not_address(const char *name)
{
    char url[POSH_MAX_DOMAIN_LEN + 16];
    struct in_addr a4;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *ai = NULL;
    CURLU *h = curl_url();
    char *host = NULL;

    if (h == NULL)
        abort();
    FUZZ_ASSERT(inet_aton(name, &a4) == 0, "inet_aton reads \"%s\" as an address", name);
    FUZZ_ASSERT(getaddrinfo(name, NULL, &hints, &ai) != 0, "getaddrinfo reads \"%s\" as an address", name);
    snprintf(url, sizeof(url), "https://%s/", name);
    FUZZ_ASSERT(curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK, "curl refuses %s", url);
    FUZZ_ASSERT(curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK && strcmp(host, name) == 0,
                "curl reads the host of %s as %s", url, host != NULL ? host : "(none)");
    if (ai != NULL)
        freeaddrinfo(ai);
    curl_free(host);
    curl_url_cleanup(h);
}

static void fuzz_domain(const char *in, unsigned choice)
{
    const size_t full = POSH_MAX_DOMAIN_LEN + 2;
    size_t outlen = choice % 4 == 0 ? full : choice == 1 ? 0 : choice, len = ref_domain(in), i;
    char *out = outlen > 0 ? xmalloc(outlen) : NULL, again[POSH_MAX_DOMAIN_LEN + 2], url[POSH_MAX_URL_LEN + 1];
    posh_err err = posh_domain_normalize(in, out, outlen);
    posh_err want = outlen == 0 ? POSH_ERR_INVALID_ARGUMENT
                    : len == 0  ? POSH_ERR_BAD_DOMAIN
                    : outlen < len + 1 ? POSH_ERR_INVALID_ARGUMENT
                                       : POSH_OK;
    int normal = len > 0 && strlen(in) == len;

    FUZZ_ASSERT(err == want, "normalize \"%s\" into %zu bytes: %d, the reference says %d", in, outlen, (int)err,
                (int)want);
    if (out != NULL && err != POSH_OK)
        FUZZ_ASSERT(out[0] == '\0', "output left after error %d", (int)err);
    if (err == POSH_OK) {
        FUZZ_ASSERT(strlen(out) == len && strncasecmp(out, in, len) == 0, "\"%s\" from \"%s\"", out, in);
        for (i = 0; i < len; i++)
            FUZZ_ASSERT((out[i] >= 'a' && out[i] <= 'z') || (out[i] >= '0' && out[i] <= '9') || out[i] == '.' ||
                            out[i] == '-',
                        "character 0x%02x in \"%s\"", (unsigned char)out[i], out);
        FUZZ_ASSERT(posh_domain_normalize(out, again, sizeof(again)) == POSH_OK && strcmp(again, out) == 0,
                    "\"%s\" does not normalise to itself", out);
        FUZZ_ASSERT(posh_build_url(POSH_LAYOUT_RFC7711, out, "xmpp-server", "tcp", url, sizeof(url)) == POSH_OK,
                    "no URL for \"%s\"", out);
        FUZZ_ASSERT(posh_url_is_https(url, strlen(url)), "built URL %s refused", url);
        name_not_address(out);
    }
    /* The URL builder inserts the name verbatim, so it takes only a normalised one: no upper case, no dot. */
    for (i = 0; normal && i < len; i++)
        normal = !(in[i] >= 'A' && in[i] <= 'Z');
    FUZZ_ASSERT(posh_build_url(POSH_LAYOUT_RFC7711, in, "xmpp-server", "tcp", url, sizeof(url)) ==
                    (normal ? POSH_OK : POSH_ERR_INVALID_ARGUMENT),
                "URL from \"%s\", which is %snormalised", in, normal ? "" : "not ");
    free(out);
}

/* ---- services and URLs built from them ---- */

static void lower(char *dst, const char *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[len] = '\0';
}

static void fuzz_service(const char *in, unsigned choice)
{
    static const char *const domains[] = {"foo.example.com", "a", "xn--bcher-kva.example",
                                          "a23456789012345678901234567890123456789012345678901234567890123."
                                          "b23456789012345678901234567890123456789012345678901234567890123."
                                          "c23456789012345678901234567890123456789012345678901234567890123."
                                          "d234567890123456789012345678901234567890123456789012345678901"};
    const char *domain = domains[choice % 4];
    char *svc = xmalloc(POSH_MAX_SERVICE_LEN + 1), *proto = xmalloc(POSH_MAX_SERVICE_LEN + 1);
    char want_svc[256], want_proto[256], url[POSH_MAX_URL_LEN + 1], want_url[POSH_MAX_URL_LEN + 1];
    size_t len = strlen(in), outlen;
    const char *dot;
    posh_err err = posh_service_parse(in, svc, proto), want = POSH_ERR_BAD_SERVICE, b;
    char *small;

    if (len > 0 && in[0] != '_' && ldh_label(in, len)) {
        lower(want_svc, in, len);
        strcpy(want_proto, "tcp");
        want = POSH_OK;
    } else if (len > 0 && in[0] == '_' && (dot = strchr(in, '.')) != NULL && dot[1] == '_' &&
               ldh_label(in + 1, (size_t)(dot - in) - 1) && ldh_label(dot + 2, strlen(dot + 2))) {
        lower(want_svc, in + 1, (size_t)(dot - in) - 1);
        lower(want_proto, dot + 2, strlen(dot + 2));
        want = POSH_OK;
    }
    FUZZ_ASSERT(err == want, "service \"%s\": %d, the reference says %d", in, (int)err, (int)want);
    if (err != POSH_OK) {
        FUZZ_ASSERT(svc[0] == '\0' && proto[0] == '\0', "output left after an error");
    } else {
        FUZZ_ASSERT(strcmp(svc, want_svc) == 0 && strcmp(proto, want_proto) == 0, "\"%s\" gave \"%s\" \"%s\"", in,
                    svc, proto);
        /* Both layouts, built exactly as RFC 7711 and draft-02 say, and accepted as https URLs. */
        FUZZ_ASSERT(posh_build_url(POSH_LAYOUT_RFC7711, domain, svc, proto, url, sizeof(url)) == POSH_OK, "7711");
        snprintf(want_url, sizeof(want_url), "https://%s/.well-known/posh/%s.json", domain, svc);
        FUZZ_ASSERT(strcmp(url, want_url) == 0 && posh_url_is_https(url, strlen(url)), "%s", url);
        FUZZ_ASSERT(posh_build_url(POSH_LAYOUT_DRAFT02, domain, svc, proto, url, sizeof(url)) == POSH_OK, "02");
        snprintf(want_url, sizeof(want_url), "https://%s/.well-known/posh._%s._%s.json", domain, svc, proto);
        FUZZ_ASSERT(strcmp(url, want_url) == 0 && posh_url_is_https(url, strlen(url)), "%s", url);
        /* Too small by any amount: refused, emptied, not overrun. */
        outlen = (choice >> 2) % (strlen(want_url) + 1);
        if (outlen > 0) {
            small = xmalloc(outlen);
            FUZZ_ASSERT(posh_build_url(POSH_LAYOUT_DRAFT02, domain, svc, proto, small, outlen) ==
                            POSH_ERR_INVALID_ARGUMENT && small[0] == '\0',
                        "URL into %zu bytes", outlen);
            free(small);
        }
        FUZZ_ASSERT(posh_build_url(0, domain, svc, proto, url, sizeof(url)) == POSH_ERR_INVALID_ARGUMENT &&
                        posh_build_url(POSH_LAYOUT_ALL, domain, svc, proto, url, sizeof(url)) ==
                            POSH_ERR_INVALID_ARGUMENT,
                    "a layout that is not one");
    }
    /* Raw input straight into the builder: accepted only when it is already a normal label. */
    b = posh_build_url(POSH_LAYOUT_DRAFT02, domain, in, "tcp", url, sizeof(url));
    want = len > 0 && ldh_label(in, len) && err == POSH_OK && strcmp(svc, in) == 0 ? POSH_OK
                                                                                    : POSH_ERR_INVALID_ARGUMENT;
    FUZZ_ASSERT(b == want, "URL from the raw service \"%s\": %d, expected %d", in, (int)b, (int)want);
    b = posh_build_url(POSH_LAYOUT_DRAFT02, domain, "x", in, url, sizeof(url));
    FUZZ_ASSERT(b == want, "URL from the raw proto \"%s\": %d, expected %d", in, (int)b, (int)want);
    free(proto);
    free(svc);
}

/* ---- https URLs ---- */

static int in_set(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/* Reference for an IPv4 dotted quad (RFC 3986 dec-octet: no leading zero, at most 255), the whole of s. */
static int ref_ipv4(const char *s, size_t n)
{
    size_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        size_t start;
        int v = 0;
        if (octet > 0 && (i >= n || s[i++] != '.'))
            return 0;
        start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 4)
            v = v * 10 + (s[i++] - '0');
        if (i == start || i - start > 3 || v > 255 || (s[start] == '0' && i - start > 1))
            return 0;
    }
    return i == n;
}

/* Reference for RFC 3986 IPv6address: 8 groups of 1-4 hex digits, or fewer with one "::" standing for at least
 * one, the last two optionally as a dotted quad. */
static int ref_ipv6(const char *s, size_t n)
{
    size_t groups = 0, i = 0;
    int dbl = 0;

    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        dbl = 1;
        i = 2;
        if (i == n)
            return 1;
    } else if (n > 0 && s[0] == ':') {
        return 0;
    }
    for (;;) {
        size_t start = i, hex = 0;
        while (i < n && isxdigit((unsigned char)s[i]) && hex < 5) {
            i++;
            hex++;
        }
        if (i < n && s[i] == '.') {
            if (!ref_ipv4(s + start, n - start))
                return 0;
            groups += 2;
            break;
        }
        if (hex == 0 || hex > 4)
            return 0;
        groups++;
        if (i == n)
            break;
        if (s[i++] != ':' || i == n)
            return 0;
        if (s[i] == ':') {
            if (dbl)
                return 0;
            dbl = 1;
            if (++i == n)
                break;
        }
    }
    return dbl ? groups <= 7 : groups == 8;
}

/* The rules as documented in posh_internal.h and the README, checked the plain way. */
static int ref_url(const char *u, size_t len, size_t *host_at, size_t *host_len, long *port)
{
    size_t i, a_end, h_end;

    *port = -1;
    if (len <= 8 || len > POSH_MAX_URL_LEN || strncasecmp(u, "https://", 8) != 0)
        return 0;
    for (i = 0; i < len; i++) {
        if (u[i] == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)u[i + 1]) || !isxdigit((unsigned char)u[i + 2]))
                return 0;
            i += 2;
        } else if (!in_set(u[i], ALNUM "-._~:/?#[]@!$&'()*+,;=")) {
            return 0;
        }
    }
    for (a_end = 8; a_end < len && !in_set(u[a_end], "/?#"); a_end++)
        ;
    if (a_end == 8 || memchr(u + 8, '@', a_end - 8) != NULL)
        return 0;
    if (u[8] == '[') {
        for (h_end = 9; h_end < a_end && u[h_end] != ']'; h_end++) {
            if (!in_set(u[h_end], "0123456789ABCDEFabcdef:."))
                return 0;
        }
        if (h_end == a_end || h_end == 9 || !ref_ipv6(u + 9, h_end - 9))
            return 0;
        h_end++; /* the ']' */
    } else {
        for (h_end = 8; h_end < a_end && u[h_end] != ':'; h_end++) {
            if (!in_set(u[h_end], ALNUM ".-"))
                return 0;
        }
        if (h_end == 8)
            return 0;
    }
    *host_at = 8;
    *host_len = h_end - 8;
    if (h_end < a_end) {
        long p = 0;
        if (u[h_end] != ':' || a_end - h_end < 2 || a_end - h_end > 6)
            return 0;
        for (i = h_end + 1; i < a_end; i++) {
            if (!isdigit((unsigned char)u[i]))
                return 0;
            p = p * 10 + (u[i] - '0');
        }
        if (p < 1 || p > 65535)
            return 0;
        *port = p;
    }
    return 1;
}

/* A host curl may read as an IPv4 address in another notation: digits, hex digits, 'x' and dots. */
static int ipv4_ish(const char *h, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (!in_set(h[i], "0123456789abcdefxABCDEFX."))
            return 0;
    }
    return 1;
}

static int dotted_quad(const char *h)
{
    unsigned a, b, c, d;
    char end;
    return sscanf(h, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &end) == 4 && a < 256 && b < 256 && c < 256 && d < 256;
}

/* What curl will request for an accepted URL: https, no userinfo, our host and port. */
static void curl_agrees(const char *u, size_t host_at, size_t host_len, long port)
{
    CURLU *h = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *cport = NULL;
    CURLUcode rc;

    if (h == NULL)
        abort();
    rc = curl_url_set(h, CURLUPART_URL, u, 0);
    if (rc != CURLUE_OK) {
        /* Only a malformed IPv6 literal ("[:]") may pass the character check and not curl: fails closed. */
        FUZZ_ASSERT(u[host_at] == '[', "accepted, but curl refuses %s (%d)", u, (int)rc);
        curl_url_cleanup(h);
        return;
    }
    FUZZ_ASSERT(curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && strcmp(scheme, "https") == 0,
                "curl reads scheme %s in %s", scheme, u);
    FUZZ_ASSERT(curl_url_get(h, CURLUPART_USER, &user, 0) != CURLUE_OK &&
                    curl_url_get(h, CURLUPART_PASSWORD, &password, 0) != CURLUE_OK,
                "curl finds userinfo in %s", u);
    FUZZ_ASSERT(curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK, "curl finds no host in %s", u);
    /* curl rewrites numeric IPv4 forms ("0x7f.1" is 127.0.0.1) and IPv6 literals; names it keeps as they are. */
    if (strlen(host) != host_len || strncasecmp(host, u + host_at, host_len) != 0) {
        if (u[host_at] == '[')
            FUZZ_ASSERT(host[0] == '[', "curl's host %s for an IPv6 literal in %s", host, u);
        else
            FUZZ_ASSERT(ipv4_ish(u + host_at, host_len) && dotted_quad(host), "curl's host %s is not ours in %s", host,
                        u);
    }
    if (curl_url_get(h, CURLUPART_PORT, &cport, 0) == CURLUE_OK)
        FUZZ_ASSERT(port == strtol(cport, NULL, 10), "curl's port %s, ours %ld, in %s", cport, port, u);
    else
        FUZZ_ASSERT(port == -1, "curl sees no port, ours %ld, in %s", port, u);
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_free(cport);
    curl_url_cleanup(h);
}

static void fuzz_url(const uint8_t *data, size_t size)
{
    size_t host_at = 0, host_len = 0;
    long port;
    /* An exact-size copy: reading one byte past len is an ASan report. */
    char *u = xmalloc(size), *z;
    int got, want;

    memcpy(u, data, size);
    got = posh_url_is_https(u, size);
    want = ref_url(u, size, &host_at, &host_len, &port);
    FUZZ_ASSERT(got == want, "posh_url_is_https(%.*s) = %d, the reference says %d", (int)size, u, got, want);
    if (got) {
        z = cstr(data, size); /* an accepted URL has no NUL */
        curl_agrees(z, host_at, host_len, port);
        free(z);
    }
    free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size < 2)
        return 0;
    switch (data[0] % 5) {
    case 0:
        fuzz_b64_decode(data[1] % 72, (const char *)data + 2, size - 2);
        break;
    case 1:
        fuzz_b64_encode(data + 2, size - 2, data[1] % 8);
        break;
    case 2:
        s = cstr(data + 2, size - 2);
        fuzz_domain(s, data[1]);
        free(s);
        break;
    case 3:
        s = cstr(data + 2, size - 2);
        fuzz_service(s, data[1]);
        free(s);
        break;
    default:
        fuzz_url(data + 2, size - 2);
        break;
    }
    return 0;
}
