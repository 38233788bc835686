/*
 * names.c - the names POSH puts into URLs: source domains, service names, the two well-known URL layouts,
 * and the check that a reference document's url is a plain https:// URL.
 */
#include "posh_internal.h"

#include <stdio.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#define POSH_MAX_LABEL_LEN 63

/* ASCII only, on purpose: the C library's isalnum() and tolower() follow the locale. */
static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static char to_lower(unsigned char c)
{
    return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* One LDH label: 1..63 letters, digits and hyphens, no hyphen first or last. Domains and services alike. */
static bool ldh_label_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > POSH_MAX_LABEL_LEN || s[0] == '-' || s[len - 1] == '-')
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alpha(c) && !is_digit(c) && c != '-')
            return false;
    }
    return true;
}

static bool all_digits(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* "0x" and hex digits, in either case ("0x", "0X7f", "0xdeadbeef"): a hexadecimal IPv4 part to inet_aton(). */
static bool hex_number(const char *s, size_t len)
{
    size_t i;

    if (len < 2 || s[0] != '0' || to_lower((unsigned char)s[1]) != 'x')
        return false;
    for (i = 2; i < len; i++) {
        if (!is_hex((unsigned char)s[i]))
            return false;
    }
    return true;
}

/*
 * A last label that inet_aton(), getaddrinfo() or curl's URL parser may read as the end of an IPv4 address:
 * decimal or octal digits only ("127.1", "2130706433", "0177.0.0.1"), or a hex number ("0x7f000001",
 * "foo.0x7f"). A DNS top-level domain is never like that (RFC 3696 section 2: never all-numeric), so refusing
 * these loses no name and stops libcurl from fetching a "source domain" from an address.
 */
static bool numeric_label(const char *s, size_t len)
{
    return all_digits(s, len) || hex_number(s, len);
}

/* Every label valid, and the last one not numeric: that is how "127.0.0.1" (and "0x7f.1") is told apart. */
static bool domain_ok(const char *s, size_t len)
{
    size_t start = 0;

    for (;;) {
        const char *dot = memchr(s + start, '.', len - start);
        size_t end = dot != NULL ? (size_t)(dot - s) : len;
        if (!ldh_label_ok(s + start, end - start))
            return false;
        if (dot == NULL)
            return !numeric_label(s + start, end - start);
        start = end + 1;
    }
}

/*
 * Belt and braces: does the C library read the name as an IPv4 address? The last-label rule already refuses
 * every form glibc's inet_aton() knows; this catches a libc that knows more. s has passed domain_ok().
 */
static bool reads_as_ipv4(const char *s, size_t len)
{
    char buf[POSH_MAX_DOMAIN_LEN + 1];
    struct in_addr addr;

    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_aton(buf, &addr) != 0;
}

static void copy_lower(char *out, const char *in, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        out[i] = to_lower((unsigned char)in[i]);
    out[len] = '\0';
}

posh_err posh_domain_normalize(const char *in, char *out, size_t outlen)
{
    size_t len;

    if (out == NULL || outlen == 0)
        return POSH_ERR_INVALID_ARGUMENT;
    out[0] = '\0';
    if (in == NULL)
        return POSH_ERR_BAD_DOMAIN;
    /* Bounded scan: the name may come from a peer (SNI); 253 characters plus one trailing dot at most. */
    len = strnlen(in, POSH_MAX_DOMAIN_LEN + 2);
    if (len > POSH_MAX_DOMAIN_LEN + 1)
        return POSH_ERR_BAD_DOMAIN;
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > POSH_MAX_DOMAIN_LEN || !domain_ok(in, len) || reads_as_ipv4(in, len))
        return POSH_ERR_BAD_DOMAIN;
    if (outlen < len + 1)
        return POSH_ERR_INVALID_ARGUMENT;
    copy_lower(out, in, len);
    return POSH_OK;
}

/* A service or protocol label, folded to lower case into out (POSH_MAX_SERVICE_LEN + 1 bytes). */
static bool service_label(const char *s, size_t len, char *out)
{
    if (!ldh_label_ok(s, len))
        return false;
    copy_lower(out, s, len);
    return true;
}

int posh_service_is_xmpp(const char *service)
{
    return strcmp(service, "_xmpp-server._tcp") == 0 || strcmp(service, "_xmpp-client._tcp") == 0;
}

posh_err posh_service_parse(const char *in, char *svc, char *proto)
{
    /* "_" svc "._" proto: the longest input worth looking at. */
    const size_t max_in = 1 + POSH_MAX_SERVICE_LEN + 2 + POSH_MAX_SERVICE_LEN;
    const char *dot;
    size_t len;

    if (svc == NULL || proto == NULL)
        return POSH_ERR_INVALID_ARGUMENT;
    svc[0] = proto[0] = '\0';
    if (in == NULL || (len = strnlen(in, max_in + 1)) > max_in)
        return POSH_ERR_BAD_SERVICE;
    if (in[0] != '_') {
        if (!service_label(in, len, svc))
            return POSH_ERR_BAD_SERVICE;
        memcpy(proto, "tcp", 4); /* RFC 7711 services are the SRV names of TCP services */
        return POSH_OK;
    }
    dot = memchr(in, '.', len);
    if (dot == NULL || dot[1] != '_' || !service_label(in + 1, (size_t)(dot - in) - 1, svc) ||
        !service_label(dot + 2, len - (size_t)(dot + 2 - in), proto)) {
        svc[0] = proto[0] = '\0';
        return POSH_ERR_BAD_SERVICE;
    }
    return POSH_OK;
}

/* Is s one lower-case LDH label? The URL builder inserts its parts verbatim, so it takes only normalised ones. */
static bool normal_label(const char *s)
{
    size_t len = strnlen(s, POSH_MAX_SERVICE_LEN + 1);
    size_t i;

    if (!ldh_label_ok(s, len))
        return false;
    for (i = 0; i < len; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z')
            return false;
    }
    return true;
}

posh_err posh_build_url(unsigned layout, const char *domain, const char *svc, const char *proto, char *out,
                        size_t outlen)
{
    char normal[POSH_MAX_DOMAIN_LEN + 2];
    int n;

    if (out == NULL || outlen == 0)
        return POSH_ERR_INVALID_ARGUMENT;
    out[0] = '\0';
    if (domain == NULL || svc == NULL || proto == NULL || !normal_label(svc) || !normal_label(proto) ||
        posh_domain_normalize(domain, normal, sizeof(normal)) != POSH_OK || strcmp(normal, domain) != 0)
        return POSH_ERR_INVALID_ARGUMENT;
    switch (layout) {
    case POSH_LAYOUT_RFC7711:
        /* RFC 7711 section 3: the service name alone; the protocol is not part of this layout. */
        n = snprintf(out, outlen, "https://%s/.well-known/posh/%s.json", domain, svc);
        break;
    case POSH_LAYOUT_DRAFT02:
        n = snprintf(out, outlen, "https://%s/.well-known/posh._%s._%s.json", domain, svc, proto);
        break;
    default:
        return POSH_ERR_INVALID_ARGUMENT;
    }
    if (n < 0 || (size_t)n >= outlen || n > POSH_MAX_URL_LEN) {
        out[0] = '\0';
        return POSH_ERR_INVALID_ARGUMENT;
    }
    return POSH_OK;
}

#define ALNUM_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define URI_CHARS ALNUM_CHARS "-._~:/?#[]@!$&'()*+,;=" /* RFC 3986 unreserved and reserved */
#define HOST_NAME_CHARS ALNUM_CHARS ".-"
#define IPV6_LITERAL_CHARS "0123456789ABCDEFabcdef:."

static bool chars_in(const char *s, size_t len, const char *set)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (s[i] == '\0' || strchr(set, s[i]) == NULL) /* strchr() finds the set's own terminator */
            return false;
    }
    return true;
}

/*
 * RFC 3986 characters only (unreserved, reserved, and '%' followed by two hex digits). Whitespace, controls,
 * NUL, non-ASCII and the characters URL parsers disagree on ('\\', '"', '<', '>', '^', '`', '{', '|', '}')
 * are refused, so that what curl requests is what this check saw.
 */
static bool uri_chars_ok(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (len - i < 3 || !is_hex((unsigned char)s[i + 1]) || !is_hex((unsigned char)s[i + 2]))
                return false;
            i += 2;
        } else if (!chars_in(s + i, 1, URI_CHARS)) {
            return false;
        }
    }
    return true;
}

/* The inside of "[...]": an IPv6 address (RFC 3986 IPv6address), not merely its characters ("[:]"). */
static bool ipv6_literal_ok(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr addr;

    if (len == 0 || len >= sizeof(buf) || !chars_in(s, len, IPV6_LITERAL_CHARS))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &addr) == 1;
}

/* Empty, or ":" and a port 1..65535 (so ":" alone, with port 0, is refused). */
static bool port_ok(const char *s, size_t len)
{
    unsigned long port = 0;
    size_t i;

    if (len == 0)
        return true;
    if (s[0] != ':' || len > 6)
        return false;
    for (i = 1; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

/*
 * host[:port] with a non-empty host: a name (letters, digits, '.', '-') or a bracketed IPv6 literal. No
 * userinfo: "https://good.example@evil.example/" reads as good.example to a human and fetches evil.example.
 * The host characters already exclude '@'; the explicit test says what is refused and why.
 */
static bool authority_ok(const char *a, size_t len)
{
    const char *end;
    size_t host_len;

    if (len == 0 || memchr(a, '@', len) != NULL)
        return false;
    if (a[0] == '[') {
        if ((end = memchr(a, ']', len)) == NULL)
            return false;
        host_len = (size_t)(end - a) - 1;
        return ipv6_literal_ok(a + 1, host_len) && port_ok(end + 1, len - host_len - 2);
    }
    end = memchr(a, ':', len);
    host_len = end != NULL ? (size_t)(end - a) : len;
    return host_len > 0 && chars_in(a, host_len, HOST_NAME_CHARS) && port_ok(a + host_len, len - host_len);
}

int posh_url_is_https(const char *url, size_t len)
{
    static const char scheme[] = "https://";
    const size_t scheme_len = sizeof(scheme) - 1;
    size_t auth_len = 0;

    if (url == NULL || len <= scheme_len || len > POSH_MAX_URL_LEN || !uri_chars_ok(url, len) ||
        strncasecmp(url, scheme, scheme_len) != 0)
        return 0;
    /* The authority ends at the first '/', '?' or '#' (RFC 3986 section 3.2). */
    while (scheme_len + auth_len < len && strchr("/?#", url[scheme_len + auth_len]) == NULL)
        auth_len++;
    return authority_ok(url + scheme_len, auth_len) ? 1 : 0;
}
