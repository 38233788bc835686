/*
 * test_names.c - source domains, service names, the two URL layouts and the reference URL check, as tables.
 */
#include "posh_internal.h"

#include <criterion/criterion.h>
#include <string.h>

/* ---- source domains ---- */

typedef struct domain_case {
    const char *in;
    const char *out; /* normalised form when accepted */
    posh_err err;
} domain_case;

static const domain_case domain_cases[] = {
    {"example.com", "example.com", POSH_OK},
    {"Example.COM", "example.com", POSH_OK},
    {"example.com.", "example.com", POSH_OK},
    {"EXAMPLE.COM.", "example.com", POSH_OK},
    {"localhost", "localhost", POSH_OK},
    {"a", "a", POSH_OK},
    {"a.b.c.d.e.f", "a.b.c.d.e.f", POSH_OK},
    {"xn--bcher-kva.example", "xn--bcher-kva.example", POSH_OK},
    {"a-b.example", "a-b.example", POSH_OK},
    {"a--b.example", "a--b.example", POSH_OK},
    {"1example.com", "1example.com", POSH_OK},
    {"123.example", "123.example", POSH_OK},
    {"1.2.3.com", "1.2.3.com", POSH_OK},
    {"example.c0m", "example.c0m", POSH_OK},
    /* Names that merely contain digits or "0x": neither inet_aton() nor curl reads them as an address. */
    {"123.example.com", "123.example.com", POSH_OK},
    {"a1.b2.c3", "a1.b2.c3", POSH_OK},
    {"example.com1", "example.com1", POSH_OK},
    {"0x.example", "0x.example", POSH_OK},
    {"0x7f.example", "0x7f.example", POSH_OK},
    {"0x7f000001.example", "0x7f000001.example", POSH_OK},
    {"example.0xg", "example.0xg", POSH_OK},
    {"example.0x7g", "example.0x7g", POSH_OK},
    {"example.x7f", "example.x7f", POSH_OK},
    {"example.00x1", "example.00x1", POSH_OK},
    {"127.0.0.1a", "127.0.0.1a", POSH_OK},
    {"1e3", "1e3", POSH_OK},
    {"", NULL, POSH_ERR_BAD_DOMAIN},
    {".", NULL, POSH_ERR_BAD_DOMAIN},
    {"..", NULL, POSH_ERR_BAD_DOMAIN},
    {"example..com", NULL, POSH_ERR_BAD_DOMAIN},
    {".example.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com..", NULL, POSH_ERR_BAD_DOMAIN},
    {"-a.example", NULL, POSH_ERR_BAD_DOMAIN},
    {"a-.example", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.-com", NULL, POSH_ERR_BAD_DOMAIN},
    {"a_b.example", NULL, POSH_ERR_BAD_DOMAIN},
    {"_xmpp-server._tcp.example", NULL, POSH_ERR_BAD_DOMAIN},
    {"*.example.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"exa mple.com", NULL, POSH_ERR_BAD_DOMAIN},
    {" example.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com ", NULL, POSH_ERR_BAD_DOMAIN},
    {"exa\tmple.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com\n", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com:5222", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com/path", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com\\path", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com?q", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com#f", NULL, POSH_ERR_BAD_DOMAIN},
    {"https://example.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"user@example.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"[::1]", NULL, POSH_ERR_BAD_DOMAIN},
    {"::1", NULL, POSH_ERR_BAD_DOMAIN},
    {"127.0.0.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"127.0.0.1.", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x7f.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"2130706433", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.123", NULL, POSH_ERR_BAD_DOMAIN},
    /* Every other spelling of an IPv4 address that inet_aton(), getaddrinfo() or curl's URL parser reads. */
    {"0x7f000001", NULL, POSH_ERR_BAD_DOMAIN},
    {"0X7F000001", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x7f000001.", NULL, POSH_ERR_BAD_DOMAIN},
    {"127.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"127.0.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"0177.0.0.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"017700000001", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x7f.0.0.1", NULL, POSH_ERR_BAD_DOMAIN},
    {"127.0.0.0x1", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x7f.0x1", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x7f.0xffffff", NULL, POSH_ERR_BAD_DOMAIN},
    {"foo.0x7f", NULL, POSH_ERR_BAD_DOMAIN},
    {"foo.0X7F", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.0x", NULL, POSH_ERR_BAD_DOMAIN},
    {"0x", NULL, POSH_ERR_BAD_DOMAIN},
    {"0xdeadbeef", NULL, POSH_ERR_BAD_DOMAIN},
    {"4294967295", NULL, POSH_ERR_BAD_DOMAIN},
    {"4294967296", NULL, POSH_ERR_BAD_DOMAIN},
    {"0", NULL, POSH_ERR_BAD_DOMAIN},
    {"ex\xc3\xa9mple.com", NULL, POSH_ERR_BAD_DOMAIN},
    {"example.com%00", NULL, POSH_ERR_BAD_DOMAIN},
};

Test(domain, table)
{
    size_t i;

    for (i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]); i++) {
        const domain_case *c = &domain_cases[i];
        char out[POSH_MAX_DOMAIN_LEN + 2];
        posh_err err = posh_domain_normalize(c->in, out, sizeof(out));
        cr_expect_eq(err, c->err, "\"%s\": got %d, expected %d", c->in, err, c->err);
        if (c->err == POSH_OK)
            cr_expect_str_eq(out, c->out, "\"%s\"", c->in);
        else
            cr_expect_str_eq(out, "", "\"%s\": output not emptied on failure", c->in);
    }
}

/* Labels of the given lengths joined with dots, plus an optional trailing dot, into buf. */
static const char *labels(char *buf, size_t buflen, const size_t *lens, size_t n, int trailing_dot)
{
    size_t i, used = 0;

    for (i = 0; i < n; i++) {
        cr_assert_lt(used + lens[i] + 2, buflen);
        if (i > 0)
            buf[used++] = '.';
        memset(buf + used, 'a' + (int)i, lens[i]);
        used += lens[i];
    }
    if (trailing_dot)
        buf[used++] = '.';
    buf[used] = '\0';
    return buf;
}

typedef struct domain_limit_case {
    const char *name;
    size_t lens[5];
    size_t n;
    int trailing_dot;
    posh_err err;
} domain_limit_case;

Test(domain, limits)
{
    static const domain_limit_case cases[] = {
        {"label of 63", {63, 3}, 2, 0, POSH_OK},
        {"label of 64", {64, 3}, 2, 0, POSH_ERR_BAD_DOMAIN},
        {"single label of 63", {63}, 1, 0, POSH_OK},
        {"single label of 64", {64}, 1, 0, POSH_ERR_BAD_DOMAIN},
        {"253 characters", {63, 63, 63, 61}, 4, 0, POSH_OK},
        {"253 characters and a trailing dot", {63, 63, 63, 61}, 4, 1, POSH_OK},
        {"254 characters", {63, 63, 63, 62}, 4, 0, POSH_ERR_BAD_DOMAIN},
        {"254 characters and a trailing dot", {63, 63, 63, 62}, 4, 1, POSH_ERR_BAD_DOMAIN},
        {"far too long", {63, 63, 63, 63, 63}, 5, 0, POSH_ERR_BAD_DOMAIN},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[400], out[POSH_MAX_DOMAIN_LEN + 2];
        labels(in, sizeof(in), cases[i].lens, cases[i].n, cases[i].trailing_dot);
        cr_expect_eq(posh_domain_normalize(in, out, sizeof(out)), cases[i].err, "%s", cases[i].name);
        if (cases[i].err == POSH_OK)
            cr_expect_eq(strlen(out), strlen(in) - (size_t)cases[i].trailing_dot, "%s", cases[i].name);
    }
}

Test(domain, arguments)
{
    char out[POSH_MAX_DOMAIN_LEN + 2];

    cr_expect_eq(posh_domain_normalize(NULL, out, sizeof(out)), POSH_ERR_BAD_DOMAIN);
    cr_expect_eq(posh_domain_normalize("example.com", NULL, 300), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_domain_normalize("example.com", out, 0), POSH_ERR_INVALID_ARGUMENT);
    /* The output must hold the name and its NUL: 12 bytes for "example.com", 11 is too few. */
    cr_expect_eq(posh_domain_normalize("Example.com.", out, 12), POSH_OK);
    cr_expect_str_eq(out, "example.com");
    cr_expect_eq(posh_domain_normalize("example.com", out, 11), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(out, "");
}

/* ---- services ---- */

typedef struct service_case {
    const char *in;
    const char *svc;
    const char *proto;
    posh_err err;
} service_case;

#define S63 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk"

static const service_case service_cases[] = {
    {"xmpp-server", "xmpp-server", "tcp", POSH_OK},
    {"xmpp-client", "xmpp-client", "tcp", POSH_OK},
    {"XMPP-Client", "xmpp-client", "tcp", POSH_OK},
    {"imap", "imap", "tcp", POSH_OK},
    {"a", "a", "tcp", POSH_OK},
    {"443", "443", "tcp", POSH_OK}, /* the [a-z0-9-] rule allows it; RFC 6335's "one letter" is not enforced */
    {S63, S63, "tcp", POSH_OK},
    {"_xmpp-server._tcp", "xmpp-server", "tcp", POSH_OK},
    {"_XMPP-SERVER._TCP", "xmpp-server", "tcp", POSH_OK},
    {"_imap._udp", "imap", "udp", POSH_OK},
    {"_a._b", "a", "b", POSH_OK},
    {"_" S63 "._" S63, S63, S63, POSH_OK},
    {"", "", "", POSH_ERR_BAD_SERVICE},
    {S63 "l", "", "", POSH_ERR_BAD_SERVICE},
    {"_" S63 "l._tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp._" S63 "l", "", "", POSH_ERR_BAD_SERVICE},
    {"-xmpp", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp-", "", "", POSH_ERR_BAD_SERVICE},
    {"-", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp_server", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp.server", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp server", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp/server", "", "", POSH_ERR_BAD_SERVICE},
    {"../etc/passwd", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp%2fserver", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp\n", "", "", POSH_ERR_BAD_SERVICE},
    {"\xc3\xbc", "", "", POSH_ERR_BAD_SERVICE},
    {"_", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-server", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-server.tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-server.", "", "", POSH_ERR_BAD_SERVICE},
    {"xmpp-server._tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-server._tcp.", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-server._tcp.example", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp._tcp._udp", "", "", POSH_ERR_BAD_SERVICE},
    {"__xmpp._tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_._tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp._", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp.__tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp._-tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp-._tcp", "", "", POSH_ERR_BAD_SERVICE},
    {"_xmpp._t/p", "", "", POSH_ERR_BAD_SERVICE},
};

Test(service, table)
{
    size_t i;

    for (i = 0; i < sizeof(service_cases) / sizeof(service_cases[0]); i++) {
        const service_case *c = &service_cases[i];
        char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
        posh_err err = posh_service_parse(c->in, svc, proto);
        cr_expect_eq(err, c->err, "\"%s\": got %d, expected %d", c->in, err, c->err);
        cr_expect_str_eq(svc, c->svc, "\"%s\": service", c->in);
        cr_expect_str_eq(proto, c->proto, "\"%s\": proto", c->in);
    }
}

Test(service, arguments)
{
    char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    char huge[4096];

    cr_expect_eq(posh_service_parse(NULL, svc, proto), POSH_ERR_BAD_SERVICE);
    cr_expect_eq(posh_service_parse("imap", NULL, proto), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_service_parse("imap", svc, NULL), POSH_ERR_INVALID_ARGUMENT);
    memset(huge, 'a', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    cr_expect_eq(posh_service_parse(huge, svc, proto), POSH_ERR_BAD_SERVICE);
    huge[0] = '_';
    huge[100] = '.';
    huge[101] = '_';
    cr_expect_eq(posh_service_parse(huge, svc, proto), POSH_ERR_BAD_SERVICE);
}

/* ---- the two URL layouts ---- */

typedef struct url_build_case {
    unsigned layout;
    const char *domain, *svc, *proto;
    const char *url;
    posh_err err;
} url_build_case;

static const url_build_case build_cases[] = {
    {POSH_LAYOUT_RFC7711, "example.com", "xmpp-server", "tcp", "https://example.com/.well-known/posh/xmpp-server.json",
     POSH_OK},
    {POSH_LAYOUT_DRAFT02, "example.com", "xmpp-server", "tcp",
     "https://example.com/.well-known/posh._xmpp-server._tcp.json", POSH_OK},
    {POSH_LAYOUT_DRAFT02, "example.com", "imap", "udp", "https://example.com/.well-known/posh._imap._udp.json",
     POSH_OK},
    /* RFC 7711 has no protocol in its path */
    {POSH_LAYOUT_RFC7711, "example.com", "imap", "udp", "https://example.com/.well-known/posh/imap.json", POSH_OK},
    {POSH_LAYOUT_RFC7711, "localhost", "a", "tcp", "https://localhost/.well-known/posh/a.json", POSH_OK},
    /* a layout is one bit, not a mask */
    {0, "example.com", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_ALL, "example.com", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {4, "example.com", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    /* parts go into the URL verbatim: only normalised ones */
    {POSH_LAYOUT_RFC7711, "Example.com", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com.", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com/x", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "evil.example/x?", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "", "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com", "IMAP", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com", "../../x", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com", "", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_DRAFT02, "example.com", "imap", "", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_DRAFT02, "example.com", "imap", "t/p", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_DRAFT02, "example.com", "imap", "_tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, NULL, "imap", "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com", NULL, "tcp", "", POSH_ERR_INVALID_ARGUMENT},
    {POSH_LAYOUT_RFC7711, "example.com", "imap", NULL, "", POSH_ERR_INVALID_ARGUMENT},
};

Test(url_build, table)
{
    size_t i;

    for (i = 0; i < sizeof(build_cases) / sizeof(build_cases[0]); i++) {
        const url_build_case *c = &build_cases[i];
        char out[POSH_MAX_URL_LEN + 1];
        posh_err err = posh_build_url(c->layout, c->domain, c->svc, c->proto, out, sizeof(out));
        cr_expect_eq(err, c->err, "case %zu: got %d, expected %d", i, err, c->err);
        cr_expect_str_eq(out, c->url, "case %zu", i);
    }
}

Test(url_build, output_size)
{
    static const char want[] = "https://example.com/.well-known/posh/imap.json";
    char out[sizeof(want)];

    cr_expect_eq(posh_build_url(POSH_LAYOUT_RFC7711, "example.com", "imap", "tcp", out, sizeof(want)), POSH_OK);
    cr_expect_str_eq(out, want);
    cr_expect_eq(posh_build_url(POSH_LAYOUT_RFC7711, "example.com", "imap", "tcp", out, sizeof(want) - 1),
                 POSH_ERR_INVALID_ARGUMENT);
    cr_expect_str_eq(out, "", "a truncated URL is never left behind");
    cr_expect_eq(posh_build_url(POSH_LAYOUT_RFC7711, "example.com", "imap", "tcp", NULL, 100),
                 POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_build_url(POSH_LAYOUT_RFC7711, "example.com", "imap", "tcp", out, 0),
                 POSH_ERR_INVALID_ARGUMENT);
}

/* The longest inputs the normalisers accept always make a URL under POSH_MAX_URL_LEN. */
Test(url_build, longest_parts)
{
    static const size_t lens[] = {63, 63, 63, 61};
    char domain[300], out[POSH_MAX_URL_LEN + 1];

    labels(domain, sizeof(domain), lens, 4, 0);
    cr_expect_eq(posh_build_url(POSH_LAYOUT_DRAFT02, domain, S63, S63, out, sizeof(out)), POSH_OK);
    cr_expect_eq(strlen(out), strlen("https:///.well-known/posh._._.json") + 253 + 63 + 63);
}

/* ---- reference URLs ---- */

typedef struct https_case {
    const char *url;
    size_t len; /* 0: strlen(url) */
    int ok;
} https_case;

static const https_case https_cases[] = {
    {"https://example.com/x", 0, 1},
    {"https://example.com/.well-known/posh/xmpp-server.json", 0, 1},
    {"HTTPS://example.com/", 0, 1},
    {"HttpS://Example.COM/", 0, 1},
    {"https://example.com", 0, 1},
    {"https://e", 0, 1},
    {"https://example.com:8443/p?q=1&r=2#frag", 0, 1},
    {"https://example.com:1/", 0, 1},
    {"https://example.com:65535/", 0, 1},
    {"https://example.com?x=1", 0, 1},
    {"https://example.com#f", 0, 1},
    {"https://[::1]:8443/x", 0, 1},
    {"https://[2001:db8::1]/", 0, 1},
    {"https://[::ffff:192.0.2.1]/", 0, 1},
    {"https://127.0.0.1/x", 0, 1},
    {"https://example.com/%41%2f", 0, 1},
    {"https://example.com/a@b", 0, 1}, /* '@' in the path is not userinfo */
    {"https://example.com/~user/;p=1,2!$'()*+", 0, 1},
    /* scheme */
    {"http://example.com/", 0, 0},
    {"ftp://example.com/", 0, 0},
    {"file:///etc/passwd", 0, 0},
    {"javascript:alert(1)", 0, 0},
    {"https:/example.com/", 0, 0},
    {"https:example.com", 0, 0},
    {"//example.com/", 0, 0},
    {"example.com/", 0, 0},
    {" https://example.com/", 0, 0},
    {"httpss://example.com/", 0, 0},
    /* host */
    {"https://", 0, 0},
    {"https:///path", 0, 0},
    {"https://?q", 0, 0},
    {"https://#f", 0, 0},
    {"https://:443/", 0, 0},
    {"https://exa_mple.com/", 0, 0},
    {"https://exa%6dple.com/", 0, 0},
    {"https://[]/", 0, 0},
    {"https://[:]/", 0, 0},
    {"https://[1:2]/", 0, 0},
    {"https://[::1.2.3]/", 0, 0},
    {"https://[1:2:3:4:5:6:7:8:9]/", 0, 0},
    {"https://[::1/", 0, 0},
    {"https://[g::1]/", 0, 0},
    {"https://[::1]x/", 0, 0},
    {"https://a[b]/", 0, 0},
    /* userinfo */
    {"https://user@example.com/", 0, 0},
    {"https://user:pw@example.com/", 0, 0},
    {"https://@example.com/", 0, 0},
    {"https://good.example@evil.example/", 0, 0},
    {"https://good.example\\@evil.example/", 0, 0},
    /* port */
    {"https://example.com:/", 0, 0},
    {"https://example.com:0/", 0, 0},
    {"https://example.com:65536/", 0, 0},
    {"https://example.com:123456/", 0, 0},
    {"https://example.com:99999999999999999999/", 0, 0},
    {"https://example.com:44a/", 0, 0},
    {"https://example.com:443:443/", 0, 0},
    {"https://example.com:-1/", 0, 0},
    /* characters */
    {"https://exa mple.com/", 0, 0},
    {"https://example.com/a b", 0, 0},
    {"https://example.com/\t", 0, 0},
    {"https://example.com/\n", 0, 0},
    {"https://example.com/\r", 0, 0},
    {"https://example.com/\x01", 0, 0},
    {"https://example.com/\x7f", 0, 0},
    {"https://example.com/\xc3\xa9", 0, 0},
    {"https://ex\xc3\xa9mple.com/", 0, 0},
    {"https://example.com/\"", 0, 0},
    {"https://example.com/<x>", 0, 0},
    {"https://example.com/a\\b", 0, 0},
    {"https://example.com/{x}", 0, 0},
    {"https://example.com/a|b", 0, 0},
    {"https://example.com/a^b", 0, 0},
    {"https://example.com/a`b", 0, 0},
    {"https://example.com/%zz", 0, 0},
    {"https://example.com/%g0", 0, 0},
    {"https://example.com/%0g", 0, 0},
    {"https://example.com/%41", 22, 0}, /* "%4": the '1' after it is past len */
    {"https://example.com/%4", 0, 0},
    {"https://example.com/%", 0, 0},
    {"https://example.com/\0.json", 24, 0},
    {"https://example.com\0/", 21, 0},
    {"", 0, 0},
};

Test(https_url, table)
{
    size_t i;

    for (i = 0; i < sizeof(https_cases) / sizeof(https_cases[0]); i++) {
        const https_case *c = &https_cases[i];
        size_t len = c->len ? c->len : strlen(c->url);
        cr_expect_eq(posh_url_is_https(c->url, len), c->ok, "\"%s\" (%zu bytes): expected %d", c->url, len, c->ok);
    }
    cr_expect_eq(posh_url_is_https(NULL, 10), 0);
}

Test(https_url, length_limit)
{
    static char url[POSH_MAX_URL_LEN + 2];
    static const char prefix[] = "https://example.com/";

    memset(url, 'a', sizeof(url) - 1);
    memcpy(url, prefix, strlen(prefix));
    cr_expect_eq(posh_url_is_https(url, POSH_MAX_URL_LEN), 1, "exactly the limit");
    cr_expect_eq(posh_url_is_https(url, POSH_MAX_URL_LEN + 1), 0, "one over the limit");
    /* Only len counts: a URL inside a longer buffer is judged on its own bytes. */
    cr_expect_eq(posh_url_is_https("https://example.com/ trailing", 20), 1);
}
