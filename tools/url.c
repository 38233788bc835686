/*
 * url.c - the check `posh generate --url` applies before it prints a reference document: the library's own
 * rule for a reference's url (lib/names.c, posh_url_is_https), restated here because the command uses only
 * the public API of the shared library. tests/test_cli.c compares the two on a table of URLs.
 */
#include "cli.h"

#include <stdbool.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#define MAX_URL_LEN 2048 /* README "Limits": reference URL */
#define ALNUM_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define URI_CHARS ALNUM_CHARS "-._~:/?#[]@!$&'()*+,;=" /* RFC 3986 unreserved and reserved */
#define HOST_NAME_CHARS ALNUM_CHARS ".-"
#define IPV6_LITERAL_CHARS "0123456789ABCDEFabcdef:."

static bool in_set(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

static bool all_in(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++)
        if (!in_set(s[i], set))
            return false;
    return true;
}

static bool is_hex(char c)
{
    return in_set(c, "0123456789abcdefABCDEF");
}

/* RFC 3986 characters only; '%' must start a two-digit hex escape. */
static bool uri_chars_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (len - i < 3 || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (!in_set(s[i], URI_CHARS)) {
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

    if (len == 0 || len >= sizeof(buf) || !all_in(s, len, IPV6_LITERAL_CHARS))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &addr) == 1;
}

/* Empty, or ":" and a port 1..65535. */
static bool port_ok(const char *s, size_t len)
{
    unsigned long port = 0;

    if (len == 0)
        return true;
    if (s[0] != ':' || len > 6)
        return false;
    for (size_t i = 1; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

/* host[:port]: a host name or a bracketed IPv6 literal; no userinfo. */
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
    return host_len > 0 && all_in(a, host_len, HOST_NAME_CHARS) && port_ok(a + host_len, len - host_len);
}

int cli_url_is_https(const char *url)
{
    static const char scheme[] = "https://";
    const size_t scheme_len = sizeof(scheme) - 1;
    size_t len, auth_len = 0;

    if (url == NULL)
        return 0;
    len = strlen(url);
    if (len <= scheme_len || len > MAX_URL_LEN || !uri_chars_ok(url, len) ||
        strncasecmp(url, scheme, scheme_len) != 0)
        return 0;
    while (scheme_len + auth_len < len && strchr("/?#", url[scheme_len + auth_len]) == NULL)
        auth_len++;
    return authority_ok(url + scheme_len, auth_len) ? 1 : 0;
}
