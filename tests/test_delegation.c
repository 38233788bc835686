/*
 * test_delegation.c - Secure Service Delegation (issue 14, part 2; draft-jennings-secure-service-delegation-00 as
 * posh reads it): the document parser as a table; posh_lookup_delegation against a real nginx (every malformed
 * form, the HTTP failures, normalised entries, the cache: single flight, negative TTL, POSH_MAX_TTL lowered by
 * Cache-Control); and verification over real TLS handshakes with SSL_CTX_set_posh_delegation, blocking and
 * non-blocking: a delegated name the certificate carries is accepted, nothing else is (a name it lacks, an
 * untrusted chain, an expired or revoked leaf, an accept-everything application callback, POSH_MODE_PIN), and POSH
 * fingerprints come first.
 *
 * The delegation document of DOMAIN for SERVICE is https://DOMAIN/.well-known/services/SERVICE/: nginx serves that
 * directory URL from SERVICE/index.html.
 */
#include "fixture.h"
#include "handshake.h"
#include "client_internal.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* Where a service's delegation document is requested, and the file nginx serves it from. */
#define DELEG_URI(svc) "/.well-known/services/" svc "/"
#define DELEG_FILE(svc) "/.well-known/services/" svc "/index.html"
#define XMPP_URI DELEG_URI("xmpp-server")
#define XMPP_FILE DELEG_FILE("xmpp-server")
#define XMPP_URL "https://" FOO XMPP_URI
/* The provider's XMPP server: the name its certificate (fixture's svc) carries. */
#define PROVIDER "xmpp.hosting.example.net"

/* A delegation document of one entry: connect to PROVIDER:5269, expect a certificate for domain. Caller frees. */
static char *deleg_doc(const char *domain)
{
    char *s = NULL;
    cr_assert_geq(asprintf(&s, "[{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"%s\"}]", domain), 0);
    return s;
}

/* ======================================================================================================= */
/* The parser                                                                                               */

/* A valid entry, and one document of it. */
#define E(h, p, d) "{\"host\":\"" h "\",\"port\":" #p ",\"domain\":\"" d "\"}"
#define OKE E("xmpp.example.com", 5269, "example.com")
/* An entry with these members. */
#define M(m) "[{" m "}]"
#define HP "\"host\":\"xmpp.example.com\",\"port\":5269"
#define HD "\"host\":\"xmpp.example.com\",\"domain\":\"example.com\""
#define PD "\"port\":5269,\"domain\":\"example.com\""

typedef struct parse_case {
    const char *name;
    const char *json;
    posh_err err;
    const char *says; /* the message holds this (error), or NULL */
    /* checked on success: the number of entries and the first entry */
    size_t n;
    const char *host;
    int port;
    const char *domain;
} parse_case;

#define OK1(h, p, d) POSH_OK, NULL, 1, h, p, d
#define FAIL(e, says) e, says, 0, NULL, 0, NULL

static const parse_case parse_cases[] = {
    /* valid */
    {"the draft's example", "[" OKE "]", OK1("xmpp.example.com", 5269, "example.com")},
    {"normalised: case and trailing dot", "[" E("XMPP.Example.COM.", 5269, "Example.Com.") "]",
     OK1("xmpp.example.com", 5269, "example.com")},
    {"member order", "[{\"domain\":\"example.com\",\"port\":5222,\"host\":\"c2s.example.com\"}]",
     OK1("c2s.example.com", 5222, "example.com")},
    {"other members ignored",
     "[{\"host\":\"xmpp.example.com\",\"port\":5269,\"domain\":\"example.com\",\"priority\":10,\"weight\":null,"
     "\"x\":{\"y\":[1,\"two\",true]}}]",
     OK1("xmpp.example.com", 5269, "example.com")},
    {"port 1", "[" E("a.example", 1, "b.example") "]", OK1("a.example", 1, "b.example")},
    {"port 65535", "[" E("a.example", 65535, "b.example") "]", OK1("a.example", 65535, "b.example")},
    {"two entries", "[" OKE "," E("backup.example.net", 5270, "example.net") "]", POSH_OK, NULL, 2,
     "xmpp.example.com", 5269, "example.com"},
    {"pretty", " \n[\n  {\n    \"host\" : \"xmpp.example.com\" ,\n    \"port\" : 5269 ,\n    \"domain\" : "
               "\"example.com\"\n  }\n]\n ",
     OK1("xmpp.example.com", 5269, "example.com")},
    {"host and domain the same", "[" E("example.com", 5269, "example.com") "]",
     OK1("example.com", 5269, "example.com")},
    {"duplicate member: refused (parsers keep the first or the last)",
     "[{\"host\":\"x\",\"host\":\"xmpp.example.com\",\"port\":0,\"port\":5269,\"domain\":\"example.com\"}]",
     FAIL(POSH_ERR_JSON, "given twice")},
    {"a name of digits and letters", "[" E("123.example", 5269, "0x.example") "]",
     OK1("123.example", 5269, "0x.example")},
    {"escaped characters in a name", "[{\"host\":\"xmpp\\u002eexample.com\",\"port\":5269,\"domain\":\"example.com\"}]",
     OK1("xmpp.example.com", 5269, "example.com")},
    /* not one JSON array */
    {"empty", "", FAIL(POSH_ERR_JSON, "empty document")},
    {"whitespace only", " \n", FAIL(POSH_ERR_JSON, NULL)},
    {"not JSON", "host: xmpp.example.com", FAIL(POSH_ERR_JSON, "byte 0")},
    {"an object instead of an array", OKE, FAIL(POSH_ERR_JSON, "not a JSON array")},
    {"a fingerprints document", "{\"fingerprints\":[],\"expires\":60}", FAIL(POSH_ERR_JSON, "not a JSON array")},
    /* json-c cannot tell a top-level scalar has ended: the message says "unexpected end", the error is JSON */
    {"null", "null", FAIL(POSH_ERR_JSON, "byte")},
    {"a string", "\"xmpp.example.com\"", FAIL(POSH_ERR_JSON, "not a JSON array")},
    {"a number", "5269", FAIL(POSH_ERR_JSON, "byte")},
    {"trailing comma", "[" OKE ",]", FAIL(POSH_ERR_JSON, "byte")},
    {"two arrays", "[" OKE "][" OKE "]", FAIL(POSH_ERR_JSON, "byte")},
    {"garbage after", "[" OKE "] x", FAIL(POSH_ERR_JSON, "byte")},
    {"truncated", "[" OKE, FAIL(POSH_ERR_JSON, "unexpected end of document")},
    {"byte order mark", "\xef\xbb\xbf[" OKE "]", FAIL(POSH_ERR_JSON, "byte 0")},
    {"single quotes", "[{'host':'xmpp.example.com','port':5269,'domain':'example.com'}]", FAIL(POSH_ERR_JSON, "byte")},
    {"leading zero in the port", "[{" HD ",\"port\":05269}]", FAIL(POSH_ERR_JSON, "byte")},
    {"NaN port", "[{" HD ",\"port\":NaN}]", FAIL(POSH_ERR_JSON, "byte")},
    {"raw newline in a string", "[{\"host\":\"xmpp.\nexample.com\"," PD "}]", FAIL(POSH_ERR_JSON, "byte")},
    {"escaped NUL in a name", "[{\"host\":\"xmpp.example.com\\u0000.evil\"," PD "}]", FAIL(POSH_ERR_JSON, "byte")},
    {"overlong UTF-8", "[{\"host\":\"\xc0\xaf\"," PD "}]", FAIL(POSH_ERR_JSON, "byte")},
    {"depth 8 (the limit)", "[{" HD ",\"port\":5269,\"x\":[[[[[1]]]]]}]", OK1("xmpp.example.com", 5269, "example.com")},
    {"depth 9", "[{" HD ",\"port\":5269,\"x\":[[[[[[1]]]]]]}]", FAIL(POSH_ERR_JSON, "byte")},
    /* the array */
    {"no entries", "[]", FAIL(POSH_ERR_DOCUMENT, "0 delegations, expected 1 to 32")},
    {"an entry that is a number", "[1]", FAIL(POSH_ERR_DOCUMENT, "[0]: expected an object, got int")},
    {"an entry that is null", "[null]", FAIL(POSH_ERR_DOCUMENT, "[0]: expected an object, got null")},
    {"an entry that is a string", "[\"xmpp.example.com\"]", FAIL(POSH_ERR_DOCUMENT, "[0]: expected an object, got string")},
    {"an entry that is an array", "[[\"xmpp.example.com\",5269,\"example.com\"]]", FAIL(POSH_ERR_DOCUMENT,
     "[0]: expected an object, got array")},
    {"the second entry not an object", "[" OKE ",true]", FAIL(POSH_ERR_DOCUMENT, "[1]: expected an object, got boolean")},
    {"an empty entry", "[{}]", FAIL(POSH_ERR_DOCUMENT, "[0].host: missing")},
    /* host */
    {"host missing", M(PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: missing")},
    {"host a number", M("\"host\":1," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: expected a string, got int")},
    {"host null", M("\"host\":null," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: expected a string, got null")},
    {"host an array", M("\"host\":[\"xmpp.example.com\"]," PD), FAIL(POSH_ERR_DOCUMENT,
     "[0].host: expected a string, got array")},
    {"host an object", M("\"host\":{}," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: expected a string, got object")},
    {"host empty", M("\"host\":\"\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv4", M("\"host\":\"192.0.2.1\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv4 short form", M("\"host\":\"127.1\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv4 as a number", M("\"host\":\"2130706433\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv4 in hex", M("\"host\":\"0x7f000001\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv6", M("\"host\":\"::1\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host IPv6 in brackets", M("\"host\":\"[2001:db8::1]\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with a port", M("\"host\":\"xmpp.example.com:5269\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host a URL", M("\"host\":\"https://xmpp.example.com/\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with a space", M("\"host\":\"xmpp example.com\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host a wildcard", M("\"host\":\"*.example.com\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with an empty label", M("\"host\":\"xmpp..example.com\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with a leading dot", M("\"host\":\".example.com\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with an underscore", M("\"host\":\"_xmpp.example.com\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with two trailing dots", M("\"host\":\"example.com..\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host not ASCII", M("\"host\":\"b\xc3\xbc" "cher.example\"," PD), FAIL(POSH_ERR_DOCUMENT, "[0].host: not a DNS name")},
    {"host with a label of 64",
     M("\"host\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\"," PD), FAIL(POSH_ERR_DOCUMENT,
     "[0].host: not a DNS name")},
    /* domain */
    {"domain missing", M(HP), FAIL(POSH_ERR_DOCUMENT, "[0].domain: missing")},
    {"domain a number", M(HP ",\"domain\":42"), FAIL(POSH_ERR_DOCUMENT, "[0].domain: expected a string, got int")},
    {"domain null", M(HP ",\"domain\":null"), FAIL(POSH_ERR_DOCUMENT, "[0].domain: expected a string, got null")},
    {"domain true", M(HP ",\"domain\":true"), FAIL(POSH_ERR_DOCUMENT, "[0].domain: expected a string, got boolean")},
    {"domain empty", M(HP ",\"domain\":\"\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain: not a DNS name")},
    {"domain IPv4", M(HP ",\"domain\":\"127.0.0.1\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain: not a DNS name")},
    {"domain IPv6", M(HP ",\"domain\":\"::1\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain: not a DNS name")},
    {"domain a wildcard", M(HP ",\"domain\":\"*.example.com\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain: not a DNS name")},
    {"domain with a slash", M(HP ",\"domain\":\"example.com/x\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain: not a DNS name")},
    {"domain in the second entry", "[" OKE ",{\"host\":\"a.example\",\"port\":1,\"domain\":\"10.0.0.1\"}]",
     FAIL(POSH_ERR_DOCUMENT, "[1].domain: not a DNS name")},
    /* port */
    {"port missing", M(HD), FAIL(POSH_ERR_DOCUMENT, "[0].port: missing")},
    {"port 0", M(HD ",\"port\":0"), FAIL(POSH_ERR_DOCUMENT, "[0].port: 0 is not a port (1..65535)")},
    {"port -1", M(HD ",\"port\":-1"), FAIL(POSH_ERR_DOCUMENT, "[0].port: -1 is not a port")},
    {"port 65536", M(HD ",\"port\":65536"), FAIL(POSH_ERR_DOCUMENT, "[0].port: 65536 is not a port")},
    {"port 4294972565 (5269 + 2^32)", M(HD ",\"port\":4294972565"), FAIL(POSH_ERR_DOCUMENT, "[0].port: 4294972565 is not")},
    {"port over int64", M(HD ",\"port\":99999999999999999999"), FAIL(POSH_ERR_DOCUMENT, "[0].port")},
    {"port under int64", M(HD ",\"port\":-99999999999999999999"), FAIL(POSH_ERR_DOCUMENT, "[0].port")},
    {"port a string", M(HD ",\"port\":\"5269\""), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got string")},
    {"port a float", M(HD ",\"port\":5269.0"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got double")},
    {"port with an exponent", M(HD ",\"port\":5.269e3"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got double")},
    {"port an integer exponent", M(HD ",\"port\":5269e0"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer")},
    {"port null", M(HD ",\"port\":null"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got null")},
    {"port true", M(HD ",\"port\":true"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got boolean")},
    {"port an array", M(HD ",\"port\":[5269]"), FAIL(POSH_ERR_DOCUMENT, "[0].port: expected an integer, got array")},
    /* which fault is reported: entries in order, then host, domain, port */
    {"host before port", M("\"host\":\"1.2.3.4\",\"port\":0,\"domain\":\"example.com\""), FAIL(POSH_ERR_DOCUMENT,
     "[0].host")},
    {"domain before port", M("\"host\":\"a.example\",\"port\":0,\"domain\":\"\""), FAIL(POSH_ERR_DOCUMENT, "[0].domain")},
    {"the first bad entry", "[{" HD ",\"port\":0},{\"host\":1," PD "}]", FAIL(POSH_ERR_DOCUMENT, "[0].port")},
};

static int delegation_doc_is_empty(const posh_delegation_doc *d)
{
    return d->n == 0 && d->entries == NULL;
}

/* Parse json; on failure also check the contract on *doc and that a message says why. */
static posh_err dparse(const char *json, size_t len, posh_delegation_doc *doc, char msg[POSH_MSG_LEN])
{
    posh_err err;
    memset(doc, 0x5a, sizeof(*doc)); /* garbage in: never read before written */
    err = posh_delegation_parse(json, len, doc, msg, POSH_MSG_LEN);
    if (err != POSH_OK) {
        cr_expect(delegation_doc_is_empty(doc), "a failed parse left data in the document");
        cr_expect_neq(msg[0], '\0', "error %d without a message", (int)err);
    } else {
        cr_expect_eq(msg[0], '\0', "success with a message: %s", msg);
        cr_expect(doc->n >= 1 && doc->n <= POSH_MAX_DELEGATIONS && doc->entries != NULL);
    }
    return err;
}

Test(delegation_parse, table)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const parse_case *c = &parse_cases[i];
        char msg[POSH_MSG_LEN];
        posh_delegation_doc doc;
        posh_err err = dparse(c->json, strlen(c->json), &doc, msg);
        cr_expect_eq(err, c->err, "%s: error %d (%s), expected %d: %s", c->name, (int)err, posh_strerror(err),
                     (int)c->err, msg);
        if (err != POSH_OK) {
            cr_expect(c->says == NULL || strstr(msg, c->says) != NULL, "%s: message \"%s\" lacks \"%s\"", c->name,
                      msg, c->says);
            continue;
        }
        if (c->err != POSH_OK) {
            posh_delegation_clear(&doc);
            continue;
        }
        cr_expect_eq(doc.n, c->n, "%s: %zu entries", c->name, doc.n);
        cr_expect_str_eq(doc.entries[0].host, c->host, "%s: host", c->name);
        cr_expect_eq(doc.entries[0].port, c->port, "%s: port", c->name);
        cr_expect_str_eq(doc.entries[0].domain, c->domain, "%s: domain", c->name);
        posh_delegation_clear(&doc);
        cr_expect(delegation_doc_is_empty(&doc), "posh_delegation_clear left data");
    }
}

static char *entries_doc(size_t n)
{
    fx_sb b = {0};
    fx_sb_addf(&b, "[");
    for (size_t i = 0; i < n; i++)
        fx_sb_addf(&b, "%s{\"host\":\"s%zu.example.net\",\"port\":%zu,\"domain\":\"d%zu.example.net\"}",
                   i ? "," : "", i, 5000 + i, i);
    fx_sb_addf(&b, "]");
    return b.s;
}

Test(delegation_parse, entries_32_and_33)
{
    char msg[POSH_MSG_LEN], *json = entries_doc(32);
    posh_delegation_doc doc;
    cr_assert_eq(dparse(json, strlen(json), &doc, msg), POSH_OK, "%s", msg);
    cr_expect_eq(doc.n, 32);
    for (size_t i = 0; i < doc.n; i++) {
        char h[64], d[64];
        snprintf(h, sizeof(h), "s%zu.example.net", i);
        snprintf(d, sizeof(d), "d%zu.example.net", i);
        cr_expect_str_eq(doc.entries[i].host, h, "entries in document order");
        cr_expect_str_eq(doc.entries[i].domain, d);
        cr_expect_eq(doc.entries[i].port, (int)(5000 + i));
    }
    posh_delegation_clear(&doc);
    free(json);
    json = entries_doc(33);
    cr_expect_eq(dparse(json, strlen(json), &doc, msg), POSH_ERR_DOCUMENT);
    cr_expect(strstr(msg, "33 delegations, expected 1 to 32") != NULL, "%s", msg);
    free(json);
}

/* A name of exactly n characters: labels of 63 and a last one to fill, with an optional trailing dot. */
static void long_name(char *out, size_t n, int dot)
{
    size_t i = 0;
    while (i < n) {
        size_t label = n - i > 63 ? 63 : n - i;
        memset(out + i, 'a', label);
        i += label;
        if (i < n) {
            out[i - 1] = 'b';
            out[i++] = '.';
        }
    }
    if (out[n - 1] == '.')
        out[n - 1] = 'c';
    out[n] = '\0';
    if (dot) {
        out[n] = '.';
        out[n + 1] = '\0';
    }
}

Test(delegation_parse, name_lengths_253_and_254)
{
    char name[300], json[700], msg[POSH_MSG_LEN];
    posh_delegation_doc doc;

    long_name(name, 253, 0);
    cr_assert_eq(strlen(name), 253);
    snprintf(json, sizeof(json), "[{\"host\":\"%s\",\"port\":5269,\"domain\":\"%s\"}]", name, name);
    cr_assert_eq(dparse(json, strlen(json), &doc, msg), POSH_OK, "253 characters: %s", msg);
    cr_expect_str_eq(doc.entries[0].host, name);
    posh_delegation_clear(&doc);

    long_name(name, 253, 1); /* 254 with the trailing dot, which is not counted */
    snprintf(json, sizeof(json), "[{\"host\":\"%s\",\"port\":5269,\"domain\":\"%s\"}]", name, name);
    cr_assert_eq(dparse(json, strlen(json), &doc, msg), POSH_OK, "253 + a trailing dot: %s", msg);
    name[253] = '\0';
    cr_expect_str_eq(doc.entries[0].domain, name, "normalised without the dot");
    posh_delegation_clear(&doc);

    long_name(name, 254, 0);
    snprintf(json, sizeof(json), "[{\"host\":\"a.example\",\"port\":5269,\"domain\":\"%s\"}]", name);
    cr_expect_eq(dparse(json, strlen(json), &doc, msg), POSH_ERR_DOCUMENT, "254 characters");
    cr_expect(strstr(msg, "[0].domain: not a DNS name") != NULL, "%s", msg);
    snprintf(json, sizeof(json), "[{\"host\":\"%s\",\"port\":5269,\"domain\":\"a.example\"}]", name);
    cr_expect_eq(dparse(json, strlen(json), &doc, msg), POSH_ERR_DOCUMENT, "254 characters");
    cr_expect(strstr(msg, "[0].host: not a DNS name") != NULL, "%s", msg);
}

Test(delegation_parse, bytes_and_arguments)
{
    char msg[POSH_MSG_LEN];
    posh_delegation_doc doc;
    static const char json[] = "[" OKE "]";

    /* The length is the only end: a NUL inside it is refused, bytes after it are never read. */
    char with_nul[sizeof(json) + 1];
    memcpy(with_nul, json, sizeof(json));
    with_nul[sizeof(json) - 1] = '\0';
    cr_expect_eq(dparse(with_nul, sizeof(json), &doc, msg), POSH_ERR_JSON, "a NUL after the document");
    cr_expect_eq(dparse("[" OKE "]garbage", strlen(json), &doc, msg), POSH_OK, "%s", msg);
    posh_delegation_clear(&doc);
    cr_expect_eq(dparse(json, strlen(json) - 1, &doc, msg), POSH_ERR_JSON, "one byte short");

    /* A short message buffer is cut, never overrun; no buffer at all is fine. */
    char small[8];
    memset(small, 'x', sizeof(small));
    cr_expect_eq(posh_delegation_parse("[]", 2, &doc, small, sizeof(small)), POSH_ERR_DOCUMENT);
    cr_expect_eq(strlen(small), sizeof(small) - 1);
    cr_expect_eq(posh_delegation_parse("[]", 2, &doc, NULL, 0), POSH_ERR_DOCUMENT);
    cr_expect_eq(posh_delegation_parse(json, strlen(json), &doc, NULL, 0), POSH_OK);
    posh_delegation_clear(&doc);

    cr_expect_eq(posh_delegation_parse(json, strlen(json), NULL, msg, sizeof(msg)), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_delegation_parse(NULL, 5, &doc, msg, sizeof(msg)), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_delegation_parse(NULL, 0, &doc, msg, sizeof(msg)), POSH_ERR_JSON, "nothing is an empty document");
    posh_delegation_clear(NULL);
}

/* ======================================================================================================= */
/* posh_lookup_delegation against nginx                                                                     */

static fx f;
static posh_client *client;
static ts_tls *server;
static ts_evil *evil;
static time_t fake_now;

static time_t fake_clock(void *arg)
{
    return *(time_t *)arg;
}

static void setup(void)
{
    fx_init(&f);
    fake_now = 1000;
}

static void teardown(void)
{
    ts_tls_stop(server);
    server = NULL;
    ts_evil_stop(evil);
    evil = NULL;
    posh_client_free(client);
    client = NULL;
    fx_fini(&f);
}

TestSuite(delegation_lookup, .init = setup, .fini = teardown, .timeout = 120);

static long deleg_requests(const char *host, const char *uri)
{
    return fx_requests(&f, host, uri);
}

/* posh_lookup_delegation, with what every result must say of itself. */
static posh_err dlookup(posh_client *c, const char *domain, const char *service, posh_result **r)
{
    posh_err err = posh_lookup_delegation(c, domain, service, r);
    cr_assert_not_null(*r, "a result explains every lookup (%s)", posh_strerror(err));
    cr_assert_eq(posh_result_error(*r), err);
    fx_expect_printable("posh_result_message", posh_result_message(*r));
    if (err != POSH_OK)
        cr_expect_eq(posh_result_delegation_count(*r), 0, "a failure has no delegations");
    return err;
}

Test(delegation_lookup, valid_entries_normalised)
{
    posh_result *r;
    const char *host = NULL, *domain = NULL, *url = NULL;
    int port = 0;
    long status = 0;
    fx_put(&f, FOO, XMPP_FILE,
           "[{\"host\":\"XMPP.Hosting.Example.NET.\",\"port\":5269,\"domain\":\"Hosting.Example.net\"},"
           "{\"host\":\"backup.example.org\",\"port\":5270,\"domain\":\"example.org.\",\"priority\":2}]");
    fx_start(&f);
    client = fx_client(&f);
    cr_assert_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_str_eq(posh_result_message(r), "");
    cr_assert_eq(posh_result_delegation_count(r), 2);
    cr_assert(posh_result_delegation(r, 0, &host, &port, &domain));
    cr_expect_str_eq(host, PROVIDER);
    cr_expect_eq(port, 5269);
    cr_expect_str_eq(domain, "hosting.example.net");
    cr_assert(posh_result_delegation(r, 1, &host, &port, &domain));
    cr_expect_str_eq(host, "backup.example.org");
    cr_expect_eq(port, 5270);
    cr_expect_str_eq(domain, "example.org");
    cr_expect(!posh_result_delegation(r, 2, &host, &port, &domain), "past the end");
    cr_expect(posh_result_delegation(r, 1, NULL, NULL, NULL), "every out-parameter is optional");
    cr_expect_str_eq(posh_result_domain(r), FOO);
    cr_expect_str_eq(posh_result_service(r), "_xmpp-server._tcp");
    cr_assert_eq(posh_result_request_count(r), 1);
    cr_assert(posh_result_request(r, 0, &url, &status));
    cr_expect_str_eq(url, XMPP_URL);
    cr_expect_eq(status, 200);
    cr_expect_eq(posh_result_ttl(r), 86400, "no Cache-Control: POSH_MAX_TTL (default)");
    cr_expect_eq(posh_result_descriptor_count(r), 0, "a delegation result holds no fingerprints");
    cr_expect_eq(posh_result_format(r), 0);
    cr_expect_eq(posh_result_followed_reference(r), 0);

    /* A delegation result never vouches for a certificate through the POSH API. */
    int match = 1, index = 7;
    size_t len;
    const unsigned char *der = ts_cert_der(f.svc, &len);
    cr_expect_eq(posh_match_der(client, r, der, len, &match, &index), POSH_OK);
    cr_expect_eq(match, 0);
    cr_expect_eq(index, -1);
    posh_result_free(r);

    /* The SRV form of the service and another spelling of the domain: the same document, from the cache. */
    cr_assert_eq(dlookup(client, "FOO.example.com.", "_xmpp-server._tcp", &r), POSH_OK);
    cr_expect_eq(posh_result_delegation_count(r), 2);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 1, "one request for both spellings");
    cr_expect_eq(deleg_requests(FOO, NULL), 1, "and no POSH request");

    /* The accessors on what is not a delegation result. */
    cr_expect_eq(posh_result_delegation_count(NULL), 0);
    cr_expect(!posh_result_delegation(NULL, 0, &host, &port, &domain));
}

Test(delegation_lookup, posh_and_delegation_caches_are_apart)
{
    posh_result *r;
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 600));
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    fx_start(&f);
    client = fx_client(&f);
    cr_assert_eq(posh_lookup(client, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(posh_result_delegation_count(r), 0, "a POSH result has no delegations");
    posh_result_free(r);
    cr_assert_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_delegation_count(r), 1);
    posh_result_free(r);
    cr_assert_eq(posh_lookup(client, FOO, "xmpp-server", &r), POSH_OK);
    cr_expect_eq(posh_result_descriptor_count(r), 1);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 1);
    cr_expect_eq(deleg_requests(FOO, RFC7711_PATH), 1);

    /* posh_client_flush forgets delegations too. */
    posh_client_flush(client);
    cr_assert_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_OK);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 2);

    /* Another service is another document. */
    cr_assert_eq(dlookup(client, FOO, "xmpp-client", &r), POSH_ERR_NO_DELEGATION);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, DELEG_URI("xmpp-client")), 1);
}

Test(delegation_lookup, bad_arguments)
{
    posh_result *r = (posh_result *)&r;
    fx_start(&f);
    client = fx_client(&f);
    cr_expect_eq(posh_lookup_delegation(client, "127.0.0.1", "xmpp-server", &r), POSH_ERR_BAD_DOMAIN);
    cr_assert_not_null(r);
    cr_expect_eq(posh_result_error(r), POSH_ERR_BAD_DOMAIN);
    posh_result_free(r);
    cr_expect_eq(posh_lookup_delegation(client, "0x7f000001", "xmpp-server", &r), POSH_ERR_BAD_DOMAIN);
    posh_result_free(r);
    cr_expect_eq(posh_lookup_delegation(client, FOO, "xmpp server", &r), POSH_ERR_BAD_SERVICE);
    cr_assert_not_null(r);
    posh_result_free(r);
    cr_expect_eq(posh_lookup_delegation(client, FOO, "_xmpp-server", &r), POSH_ERR_BAD_SERVICE);
    posh_result_free(r);
    r = (posh_result *)&r;
    cr_expect_eq(posh_lookup_delegation(NULL, FOO, "xmpp-server", &r), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_null(r, "nothing to release");
    r = (posh_result *)&r;
    cr_expect_eq(posh_lookup_delegation(client, NULL, "xmpp-server", &r), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_null(r);
    cr_expect_eq(posh_lookup_delegation(client, FOO, NULL, &r), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_lookup_delegation(client, FOO, "xmpp-server", NULL), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(deleg_requests(NULL, NULL), 0, "no request for bad arguments");
}

/* Every malformed form of the parser's table, served by nginx: the error, the URL and the member at fault. */
Test(delegation_lookup, every_malformed_form)
{
    size_t n = sizeof(parse_cases) / sizeof(parse_cases[0]);
    for (size_t i = 0; i < n; i++) {
        char path[96];
        snprintf(path, sizeof(path), "/.well-known/services/m%zu/index.html", i);
        cr_assert_eq(ts_nginx_put_bytes(f.nginx, FOO, path, parse_cases[i].json, strlen(parse_cases[i].json)), 0);
    }
    fx_start(&f);
    client = fx_client(&f);
    for (size_t i = 0; i < n; i++) {
        const parse_case *c = &parse_cases[i];
        char svc[16], url[128];
        posh_result *r;
        snprintf(svc, sizeof(svc), "m%zu", i);
        snprintf(url, sizeof(url), "https://" FOO "/.well-known/services/%s/: ", svc);
        posh_err err = dlookup(client, FOO, svc, &r);
        cr_expect_eq(err, c->err, "%s: %s, expected %s: %s", c->name, posh_strerror(err), posh_strerror(c->err),
                     posh_result_message(r));
        if (c->err != POSH_OK && err == c->err) {
            cr_expect(strncmp(posh_result_message(r), url, strlen(url)) == 0, "%s: message names the URL: %s",
                      c->name, posh_result_message(r));
            cr_expect(c->says == NULL || strstr(posh_result_message(r), c->says) != NULL,
                      "%s: message \"%s\" lacks \"%s\"", c->name, posh_result_message(r), c->says);
            cr_expect_eq(posh_result_ttl(r), 60, "%s: a failure lives the negative TTL", c->name);
        }
        if (c->err == POSH_OK && err == POSH_OK)
            cr_expect_eq(posh_result_delegation_count(r), c->n, "%s", c->name);
        posh_result_free(r);
    }
}

/*
 * A name with a terminal escape and a bell (JSON escapes, so json-c decodes them into the string): refused, and the
 * message names the member without repeating the value (dlookup checks that it is printable).
 */
Test(delegation_lookup, control_bytes_in_a_name_refused)
{
    posh_result *r;
    fx_put(&f, FOO, XMPP_FILE,
           "[{\"host\":\"xmpp.example.com\",\"port\":5269,\"domain\":\"ex\\u001b[31mample\\u0007.com\"},"
           "{\"\\u001b]0;x\\u0007\":1}]");
    fx_start(&f);
    client = fx_client(&f);
    cr_assert_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_ERR_DOCUMENT, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "[0].domain: not a DNS name") != NULL, "%s", posh_result_message(r));
    posh_result_free(r);
}

Test(delegation_lookup, http_failures)
{
    posh_result *r;
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, DELEG_URI("forbidden"), 403), 0);
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, DELEG_URI("gone"), 410), 0);
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, DELEG_URI("broken"), 500), 0);
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, DELEG_URI("unavailable"), 503), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DELEG_URI("to-http"), 302, "http://" HOSTING "/deleg.json"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DELEG_URI("to-https"), 301, "https://" HOSTING "/deleg.json"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DELEG_URI("to-missing"), 307, "https://" HOSTING "/none.json"), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DELEG_URI("loop"), 302, "https://" FOO DELEG_URI("loop")), 0);
    cr_assert_eq(ts_nginx_redirect(f.nginx, FOO, DELEG_URI("to-ftp"), 302, "ftp://" HOSTING "/deleg.json"), 0);
    fx_put_free(&f, HOSTING, "/deleg.json", deleg_doc(PROVIDER));
    fx_start(&f);
    client = fx_client(&f);

    cr_expect_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_ERR_NO_DELEGATION, "nothing published: 404");
    cr_expect(strstr(posh_result_message(r), XMPP_URL ": HTTP status 404: no delegation document") != NULL, "%s",
              posh_result_message(r));
    cr_expect_eq(posh_result_ttl(r), 60);
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "forbidden", &r), POSH_ERR_NO_DELEGATION, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "403") != NULL, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "gone", &r), POSH_ERR_NO_DELEGATION, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "broken", &r), POSH_ERR_HTTP_STATUS, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "500") != NULL, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "unavailable", &r), POSH_ERR_HTTP_STATUS, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "to-http", &r), POSH_ERR_REDIRECT_SCHEME, "%s", posh_result_message(r));
    cr_expect_eq(deleg_requests(HOSTING, "/deleg.json"), 0, "an http:// redirect is never followed");
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "to-ftp", &r), POSH_ERR_REDIRECT_SCHEME, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "loop", &r), POSH_ERR_TOO_MANY_REDIRECTS, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(dlookup(client, FOO, "to-missing", &r), POSH_ERR_NO_DELEGATION, "%s", posh_result_message(r));
    cr_expect(strstr(posh_result_message(r), "https://" HOSTING "/none.json: HTTP status 404") != NULL, "%s",
              posh_result_message(r));
    posh_result_free(r);

    /* An https redirect is followed; the result lists both requests. */
    const char *url;
    long status;
    cr_expect_eq(dlookup(client, FOO, "to-https", &r), POSH_OK, "%s", posh_result_message(r));
    cr_expect_eq(posh_result_delegation_count(r), 1);
    cr_assert_eq(posh_result_request_count(r), 2);
    cr_assert(posh_result_request(r, 0, &url, &status));
    cr_expect_str_eq(url, "https://" FOO DELEG_URI("to-https"));
    cr_expect_eq(status, 301);
    cr_assert(posh_result_request(r, 1, &url, &status));
    cr_expect_str_eq(url, "https://" HOSTING "/deleg.json");
    cr_expect_eq(status, 200);
    posh_result_free(r);
}

Test(delegation_lookup, size_and_tls_failures)
{
    posh_result *r;
    char connect_to[700];
    fx_sb big = {0};
    fx_sb_addf(&big, "[" OKE);
    while (big.len < 70000)
        fx_sb_addf(&big, ",{\"host\":\"xmpp.example.com\",\"port\":5269,\"domain\":\"example.com\",\"pad\":\"%0200d\"}",
                   0);
    fx_sb_addf(&big, "]");
    fx_put(&f, FOO, XMPP_FILE, big.s);
    free(big.s);
    fx_start(&f);

    /* A body over POSH_MAX_BYTES (65536 by default). */
    client = fx_client(&f);
    cr_expect_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_ERR_TOO_LARGE, "%s", posh_result_message(r));
    posh_result_free(r);

    /* A web server whose certificate is not for the domain (nginx's default site answers for it). */
    posh_config *cfg = fx_config(&f);
    snprintf(connect_to, sizeof(connect_to), "%s,evil.example.org:443:127.0.0.1:%d", f.connect_to,
             ts_nginx_port(f.nginx));
    cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    posh_client *c2 = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(c2);
    cr_expect_eq(dlookup(c2, "evil.example.org", "xmpp-server", &r), POSH_ERR_TLS, "%s", posh_result_message(r));
    posh_result_free(r);
    cr_expect_eq(deleg_requests(NULL, XMPP_URI), 1, "the request on a connection that failed verification never left");
    posh_client_free(c2);
}

/* ---- the cache: single flight, negative TTL, lifetime ---- */

static posh_client *clocked(long negative_ttl, long max_ttl, const char *connect_to)
{
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_clock(cfg, fake_clock, &fake_now), POSH_OK);
    cr_assert_eq(posh_config_set_negative_ttl(cfg, negative_ttl), POSH_OK);
    if (max_ttl > 0)
        cr_assert_eq(posh_config_set_max_ttl(cfg, max_ttl), POSH_OK);
    if (connect_to != NULL)
        cr_assert_eq(posh_config_set_connect_to(cfg, connect_to), POSH_OK);
    cr_assert_eq(posh_config_set_timeout_ms(cfg, 30000), POSH_OK);
    return fx_client_of(cfg);
}

static posh_err dlook(posh_client *c, long *ttl)
{
    posh_result *r = NULL;
    posh_err err = dlookup(c, FOO, "xmpp-server", &r);
    if (ttl != NULL)
        *ttl = posh_result_ttl(r);
    posh_result_free(r);
    return err;
}

Test(delegation_lookup, failures_cached_for_the_negative_ttl)
{
    cr_assert_eq(ts_nginx_status(f.nginx, FOO, DELEG_URI("imap"), 500), 0);
    fx_start(&f);
    client = clocked(30, 0, NULL);
    cr_assert_eq(dlook(client, NULL), POSH_ERR_NO_DELEGATION);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 1);
    fake_now += 29;
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    cr_assert_eq(dlook(client, NULL), POSH_ERR_NO_DELEGATION, "still the cached failure");
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 1, "a peer cannot make us hammer the web server");
    fake_now += 1;
    cr_assert_eq(dlook(client, NULL), POSH_OK, "after the negative TTL the new document is seen");
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 2);

    /* A server error is cached the same way. */
    posh_result *r;
    cr_assert_eq(dlookup(client, FOO, "imap", &r), POSH_ERR_HTTP_STATUS);
    cr_expect_eq(posh_result_ttl(r), 30);
    posh_result_free(r);
    fake_now += 29;
    cr_assert_eq(dlookup(client, FOO, "imap", &r), POSH_ERR_HTTP_STATUS);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, DELEG_URI("imap")), 1);
    fake_now += 1;
    cr_assert_eq(dlookup(client, FOO, "imap", &r), POSH_ERR_HTTP_STATUS);
    posh_result_free(r);
    cr_expect_eq(deleg_requests(FOO, DELEG_URI("imap")), 2);
}

Test(delegation_lookup, negative_ttl_zero_caches_no_failure)
{
    fx_start(&f);
    client = clocked(0, 0, NULL);
    cr_assert_eq(dlook(client, NULL), POSH_ERR_NO_DELEGATION);
    cr_assert_eq(dlook(client, NULL), POSH_ERR_NO_DELEGATION);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 2);
}

Test(delegation_lookup, lives_max_ttl_without_cache_control)
{
    long ttl = 0;
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    fx_start(&f);
    client = clocked(60, 600, NULL);
    posh_result *r;
    cr_assert_eq(dlookup(client, FOO, "xmpp-server", &r), POSH_OK);
    ttl = posh_result_ttl(r);
    cr_expect_eq(ttl, 600, "the draft has no expires: POSH_MAX_TTL");
    cr_expect_eq(posh_result_expires_at(r), fake_now + 600);
    posh_result_free(r);
    fake_now += 599;
    cr_assert_eq(dlook(client, NULL), POSH_OK);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 1, "fresh one second before the end");
    fake_now += 1;
    cr_assert_eq(dlook(client, NULL), POSH_OK);
    cr_expect_eq(deleg_requests(FOO, XMPP_URI), 2, "stale at the end: fetched again");
}

/* An in-process HTTPS server (web_foo's certificate) for FOO, one route for the delegation document. */
static void start_evil(const ts_evil_route_opts *o, const char *uri, char *connect_to, size_t len)
{
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo)));
    cr_assert_eq(ts_evil_route(evil, uri, o), 0);
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, len, "%s:443:127.0.0.1:%d", FOO, ts_evil_port(evil));
}

typedef struct cc_case {
    const char *headers;
    long ttl; /* with POSH_MAX_TTL 3600 */
} cc_case;

static const cc_case cc_cases[] = {
    {"Cache-Control: max-age=120\r\n", 120},
    {"Cache-Control: public, max-age=30, must-revalidate\r\n", 30},
    {"Cache-Control: max-age=7200\r\n", 3600},
    {"Cache-Control: max-age=3600\r\n", 3600},
    {"Cache-Control: max-age=3599\r\n", 3599},
    {"Cache-Control: max-age=1\r\n", 1},
    {"Cache-Control: max-age=0\r\n", 0},
    {"Cache-Control: no-cache\r\n", 0},
    {"Cache-Control: no-store\r\n", 0},
    {"Cache-Control: private, no-store, max-age=100\r\n", 0},
    {"Cache-Control: max-age=100\r\nCache-Control: max-age=50\r\n", 50},
    {"Cache-Control: max-age=50\r\nCache-Control: max-age=100\r\n", 50},
    {"Cache-Control: MAX-AGE=40\r\n", 40},
    {"Cache-Control: max-age=12x\r\n", 3600},
    {"Cache-Control: max-age=-5\r\n", 3600},
    {"Cache-Control: max-age=\r\n", 3600},
    {"Cache-Control: s-maxage=10\r\n", 3600},
    {"Cache-Control: max-age=99999999999999999999\r\n", 3600},
    {"Cache-Control: public\r\n", 3600},
    {"Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n", 3600},
    {"Cache-Control: No-Store\r\n", 0},
    {"Cache-Control: public,no-cache\r\n", 0},
    {"Cache-Control: public ,max-age=20\r\n", 20},
};

/*
 * The same rule for the other spellings HTTP allows: RFC 9110 5.6.1 lets a list have optional whitespace before a
 * comma as well as after it, and RFC 9111 5.2 says a recipient SHOULD accept an argument in the quoted-string form
 * (which a sender must not generate). Read as anything else, the document lives POSH_MAX_TTL instead of the seconds
 * its server gave it.
 */
static const cc_case cc_spellings[] = {
    {"Cache-Control: max-age=10 , public\r\n", 10},
    {"Cache-Control: max-age=25\t,\tpublic\r\n", 25},
    {"Cache-Control: no-store , public\r\n", 0},
    {"Cache-Control: max-age=\"30\"\r\n", 30},
};

/* Serve the delegation document of service ccI with the headers of cases[I]; check the lifetime of each. */
static void run_cc(const cc_case *cases, size_t n, char *doc)
{
    char connect_to[128];
    cr_assert_not_null(evil = ts_evil_new(ts_cert_x509(f.web_foo), ts_cert_key(f.web_foo)));
    for (size_t i = 0; i < n; i++) {
        char uri[64];
        ts_evil_route_opts o = {.status = 200, .body = doc, .headers = cases[i].headers};
        snprintf(uri, sizeof(uri), "/.well-known/services/cc%zu/", i);
        cr_assert_eq(ts_evil_route(evil, uri, &o), 0);
    }
    cr_assert_eq(ts_evil_start(evil), 0);
    snprintf(connect_to, sizeof(connect_to), "%s:443:127.0.0.1:%d", FOO, ts_evil_port(evil));
    client = clocked(60, 3600, connect_to);
    for (size_t i = 0; i < n; i++) {
        char svc[16], uri[64];
        posh_result *r;
        snprintf(svc, sizeof(svc), "cc%zu", i);
        snprintf(uri, sizeof(uri), "/.well-known/services/cc%zu/", i);
        cr_assert_eq(dlookup(client, FOO, svc, &r), POSH_OK, "%s: %s", cases[i].headers, posh_result_message(r));
        cr_expect_eq(posh_result_ttl(r), cases[i].ttl, "%s: ttl %ld, expected %ld", cases[i].headers,
                     posh_result_ttl(r), cases[i].ttl);
        posh_result_free(r);
        /* A lifetime of 0 is never served from the cache; any other is, until it ends. */
        cr_assert_eq(dlookup(client, FOO, svc, &r), POSH_OK);
        posh_result_free(r);
        cr_expect_eq(ts_evil_requests(evil, uri), cases[i].ttl == 0 ? 2 : 1, "%s", cases[i].headers);
    }
}

Test(delegation_lookup, cache_control_list_spellings)
{
    char *doc = deleg_doc(PROVIDER);
    run_cc(cc_spellings, sizeof(cc_spellings) / sizeof(cc_spellings[0]), doc);
    free(doc);
}

Test(delegation_lookup, max_ttl_lowered_by_cache_control)
{
    char *doc = deleg_doc(PROVIDER);
    run_cc(cc_cases, sizeof(cc_cases) / sizeof(cc_cases[0]), doc);
    /* And a max-age lifetime ends when it says. */
    fake_now += 119;
    posh_result *r;
    cr_assert_eq(dlookup(client, FOO, "cc0", &r), POSH_OK);
    posh_result_free(r);
    cr_expect_eq(ts_evil_requests(evil, "/.well-known/services/cc0/"), 1);
    fake_now += 1;
    cr_assert_eq(dlookup(client, FOO, "cc0", &r), POSH_OK);
    posh_result_free(r);
    cr_expect_eq(ts_evil_requests(evil, "/.well-known/services/cc0/"), 2);
    free(doc);
}

/* Single flight: a slow server makes every thread arrive while the first lookup runs. */
#define FLIGHT 16

static pthread_barrier_t flight_start;
static posh_result *flight_results[FLIGHT];

static void *flight_main(void *arg)
{
    posh_result **out = arg;
    pthread_barrier_wait(&flight_start);
    posh_err err = posh_lookup_delegation(client, FOO, "xmpp-server", out);
    cr_expect_eq(err, POSH_OK);
    return NULL;
}

Test(delegation_lookup, single_flight)
{
    pthread_t t[FLIGHT];
    char connect_to[128], *doc = deleg_doc(PROVIDER);
    ts_evil_route_opts slow = {.status = 200, .body = doc, .drip_ms = 40};
    start_evil(&slow, XMPP_URI, connect_to, sizeof(connect_to));
    client = clocked(60, 0, connect_to);
    pthread_barrier_init(&flight_start, NULL, FLIGHT);
    for (int i = 0; i < FLIGHT; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, flight_main, &flight_results[i]), 0);
    for (int i = 0; i < FLIGHT; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < FLIGHT; i++) {
        cr_expect_eq(posh_result_error(flight_results[i]), POSH_OK, "%s", posh_result_message(flight_results[i]));
        cr_expect_eq(flight_results[i], flight_results[0], "every caller shares the one result");
        posh_result_free(flight_results[i]);
    }
    cr_expect_eq(ts_evil_requests(evil, XMPP_URI), 1, "one fetch for %d concurrent lookups", FLIGHT);
    cr_expect_eq(ts_evil_requests(evil, NULL), 1, "and nothing else");
    pthread_barrier_destroy(&flight_start);
    free(doc);
}

/* ======================================================================================================= */
/* Verification: SSL_CTX_set_posh_delegation over real handshakes                                            */

TestSuite(delegation_verify, .init = setup, .fini = teardown, .timeout = 120);

/* Start nginx (unless started) and a TLS server presenting cert. */
static void start_server(ts_cert *cert)
{
    if (ts_nginx_port(f.nginx) < 0)
        fx_start(&f);
    if (client == NULL)
        client = fx_client(&f);
    server = ts_tls_start(ts_cert_x509(cert), ts_cert_chain(cert), ts_cert_key(cert));
    cr_assert_not_null(server, "TLS server did not start");
}

static SSL_CTX *ctx_new(int delegation)
{
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, client, "xmpp-server");
    if (delegation)
        cr_assert_eq(SSL_CTX_set_posh_delegation(ctx, 1), 1);
    return ctx;
}

/* Handshakes with host (SSL_set1_host) and SNI, to the server; tweak may adjust the SSL first. */
static hs handshake_with(SSL_CTX *ctx, const char *host, void (*tweak)(SSL *))
{
    hs h = hs_handshake(ctx, ts_tls_port(server), host, host, tweak);
    fx_expect_printable("SSL_get_posh_message", h.msg);
    return h;
}

static hs handshake(SSL_CTX *ctx)
{
    return handshake_with(ctx, FOO, NULL);
}

static hs handshake_nb_with(SSL_CTX *ctx, const char *host, void (*tweak)(SSL *))
{
    hs h = hs_handshake_nb(ctx, ts_tls_port(server), host, tweak);
    fx_expect_printable("SSL_get_posh_message", h.msg);
    return h;
}

static hs handshake_nb(SSL_CTX *ctx, const char *host)
{
    return handshake_nb_with(ctx, host, NULL);
}

#define DELEGATED_MSG "delegated to " PROVIDER " by " XMPP_URL

static void expect_delegated(hs h, const char *what)
{
    cr_expect(h.connected, "%s: %s", what, h.msg);
    cr_expect_eq(h.verify_result, X509_V_OK, "%s: %s", what, X509_verify_cert_error_string(h.verify_result));
    cr_expect_eq(h.status, POSH_STATUS_DELEGATED, "%s: status %d: %s", what, (int)h.status, h.msg);
    cr_expect_eq(h.err, POSH_OK, "%s", what);
    cr_expect(strstr(h.msg, DELEGATED_MSG) != NULL, "%s: message \"%s\"", what, h.msg);
}

Test(delegation_verify, delegated_name_on_the_certificate_accepted)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    expect_delegated(h, "delegated");
    cr_expect(strncmp(h.msg, FOO " _xmpp-server._tcp: ", strlen(FOO " _xmpp-server._tcp: ")) == 0, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "POSH is tried first");
    cr_expect_eq(fx_requests(&f, FOO, DRAFT02_PATH), 1);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 1);
    /* Again: both answers from the cache. */
    h = handshake(ctx);
    expect_delegated(h, "cached");
    cr_expect_eq(fx_requests(&f, FOO, NULL), 3);
    SSL_CTX_free(ctx);
}

Test(delegation_verify, delegated_name_not_on_the_certificate_rejected)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc("other.hosting.example.net"));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH, "%s", X509_verify_cert_error_string(h.verify_result));
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "POSH's error is kept: %s", h.msg);
    cr_expect(strstr(h.msg, "no POSH document") != NULL, "POSH's message first: %s", h.msg);
    cr_expect(strstr(h.msg, "; delegation: the certificate carries none of the 1 names delegated by " XMPP_URL) != NULL,
              "%s", h.msg);
    SSL_CTX_free(ctx);
}

/* A delegation naming the reference identifier itself, or the source domain's own web name: not the peer's. */
Test(delegation_verify, delegation_to_names_the_peer_lacks)
{
    fx_put(&f, FOO, XMPP_FILE,
           "[{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"" FOO "\"},"
           "{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"hosting.example.net\"},"
           "{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"example.net\"},"
           "{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"xmpp.hosting.example.net.evil\"}]");
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    cr_expect(strstr(h.msg, "none of the 4 names") != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(delegation_verify, the_matching_entry_is_named)
{
    fx_put(&f, FOO, XMPP_FILE,
           "[{\"host\":\"other.hosting.example.net\",\"port\":5269,\"domain\":\"other.hosting.example.net\"},"
           "{\"host\":\"" PROVIDER "\",\"port\":5270,\"domain\":\"XMPP.Hosting.Example.Net.\"}]");
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    expect_delegated(handshake(ctx), "the second entry");
    SSL_CTX_free(ctx);
}

Test(delegation_verify, off_unless_asked)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(0);
    hs h = handshake(ctx);
    cr_expect(!h.connected, "delegation is opt-in");
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH);
    cr_expect(strstr(h.msg, "delegation") == NULL, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0, "the delegation document is never requested");

    /* On, then off again. */
    cr_assert_eq(SSL_CTX_set_posh_delegation(ctx, 1), 1);
    expect_delegated(handshake(ctx), "on");
    cr_assert_eq(SSL_CTX_set_posh_delegation(ctx, 0), 1);
    h = handshake(ctx);
    cr_expect(!h.connected, "off again");
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    SSL_CTX_free(ctx);

    /* A context without POSH cannot take delegation. */
    SSL_CTX *plain = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(plain);
    cr_expect_eq(SSL_CTX_set_posh_delegation(plain, 1), 0);
    cr_expect_eq(SSL_CTX_set_posh_delegation(NULL, 1), 0);
    SSL_CTX_free(plain);
}

Test(delegation_verify, posh_fingerprints_first)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 600));
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.verify_result, X509_V_OK);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "POSH vouched: %s", h.msg);
    cr_expect(strstr(h.msg, "descriptor 0") != NULL, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0, "the delegation document is never requested");
    SSL_CTX_free(ctx);
}

/* POSH answers but vouches for another certificate: then the delegation is read, and decides. */
Test(delegation_verify, delegation_after_posh_no_match)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.other, 600));
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    expect_delegated(handshake(ctx), "after NO_MATCH");
    SSL_CTX_free(ctx);

    /* And when neither vouches, POSH's own error (NO_MATCH) is the one kept. */
    posh_client_flush(client);
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc("other.hosting.example.net"));
    ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.err, POSH_ERR_NO_MATCH, "%s", h.msg);
    cr_expect(strstr(h.msg, "fingerprint descriptors") != NULL, "%s", h.msg);
    cr_expect(strstr(h.msg, "; delegation: ") != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(delegation_verify, no_or_bad_delegation_document)
{
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    /* POSH's message, then the delegation's: posh_strerror() and the lookup's message. */
    cr_expect(strstr(h.msg, "; delegation: no service delegation document published: " XMPP_URL
                            ": HTTP status 404: no delegation document") != NULL,
              "%s", h.msg);
    SSL_CTX_free(ctx);

    /* A malformed document: still POSH's error, the document's fault in the message. */
    posh_client_flush(client);
    fx_put(&f, FOO, XMPP_FILE, "[{\"host\":\"" PROVIDER "\",\"port\":0,\"domain\":\"" PROVIDER "\"}]");
    ctx = ctx_new(1);
    h = handshake(ctx);
    cr_expect(!h.connected, "a document with a bad entry is not partly used");
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    cr_expect(strstr(h.msg, "[0].port: 0 is not a port") != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);

    /* One bad entry among good ones: the whole document is refused. */
    posh_client_flush(client);
    fx_put(&f, FOO, XMPP_FILE,
           "[{\"host\":\"" PROVIDER "\",\"port\":5269,\"domain\":\"" PROVIDER "\"},{\"host\":\"127.0.0.1\",\"port\":1,"
           "\"domain\":\"x.example\"}]");
    ctx = ctx_new(1);
    h = handshake(ctx);
    cr_expect(!h.connected, "a document with a bad entry is not partly used");
    cr_expect(strstr(h.msg, "[1].host: not a DNS name") != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(delegation_verify, posh_delegation_config_enables_it)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_delegation(cfg, 1), POSH_OK);
    client = posh_client_new(cfg);
    posh_config_free(cfg);
    cr_assert_not_null(client);
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(0);
    expect_delegated(handshake(ctx), "POSH_DELEGATION on the client");
    /* The client's switch holds for every context of it: a context cannot turn it off. */
    cr_assert_eq(SSL_CTX_set_posh_delegation(ctx, 0), 1);
    expect_delegated(handshake(ctx), "the context's 0 does not override the client's 1");
    SSL_CTX_free(ctx);
    cr_expect_eq(posh_config_set_delegation(NULL, 1), POSH_ERR_INVALID_ARGUMENT);
}

/* ---- no laundering ---- */

static void (*configure_ctx)(SSL_CTX *);

/*
 * cert carries the delegated name; the delegation vouches for that name only, never for the rest: the verification
 * fails as OpenSSL says, and an application callback that accepts everything goes on but sees the same error (as
 * test_verify.c asserts for POSH: the status says what delegation decided about the name, the verify result stands).
 */
static void expect_not_laundered(ts_cert *cert, long want, int nonblocking)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(cert);
    for (int with_cb = 0; with_cb < 2; with_cb++) {
        SSL_CTX *ctx = ctx_new(1);
        if (nonblocking)
            cr_assert_eq(SSL_CTX_set_posh_nonblocking(ctx, 1), 1);
        if (configure_ctx != NULL)
            configure_ctx(ctx);
        if (with_cb)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_accept_all);
        hs h = nonblocking ? handshake_nb(ctx, FOO) : handshake(ctx);
        if (!with_cb)
            cr_expect(!h.connected, "the handshake must fail: %s", h.msg);
        else
            cr_expect(h.connected, "an accept-all callback lets the handshake go on");
        cr_expect(hs_same_failure(h.verify_result, want), "%s: verify result %ld (%s), want %ld (%s): %s",
                  with_cb ? "accept-all callback" : "no callback", h.verify_result,
                  X509_verify_cert_error_string(h.verify_result), want, X509_verify_cert_error_string(want), h.msg);
        cr_expect_neq(h.verify_result, X509_V_OK, "never laundered into X509_V_OK");
        cr_expect_eq(h.status, POSH_STATUS_DELEGATED, "the delegation vouched for the name only: %s", h.msg);
        SSL_CTX_free(ctx);
        posh_client_flush(client);
    }
}

/* expect_not_laundered for a certificate for PROVIDER that ca issued (see fx_issue). */
static void issued_not_laundered(ts_ca *ca, long nb_days, long na_days, int self_signed, long want, int nonblocking)
{
    ts_cert *c = fx_issue(ca, PROVIDER, nb_days, na_days, self_signed);
    expect_not_laundered(c, want, nonblocking);
    ts_cert_free(c);
}

/* The same for a certificate from a CA nobody trusts. */
static void untrusted_not_laundered(int nonblocking)
{
    ts_ca *stranger = ts_ca_new("stranger CA");
    issued_not_laundered(stranger, -1, 30, 0, X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, nonblocking);
    ts_ca_free(stranger);
}

Test(delegation_verify, untrusted_chain_not_laundered)
{
    untrusted_not_laundered(0);
}

Test(delegation_verify, untrusted_intermediate_chain_not_laundered)
{
    ts_ca *stranger = ts_ca_new("stranger CA");
    ts_ca *mid = ts_ca_new_intermediate(stranger, "stranger intermediate");
    ts_cert *c = fx_issue(mid, PROVIDER, -1, 30, 0);
    expect_not_laundered(c, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 0);
    ts_cert_free(c);
    ts_ca_free(mid);
    ts_ca_free(stranger);
}

Test(delegation_verify, self_signed_not_laundered)
{
    issued_not_laundered(NULL, -1, 30, 1, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, 0);
}

Test(delegation_verify, expired_leaf_not_laundered)
{
    issued_not_laundered(f.ca, -30, -1, 0, X509_V_ERR_CERT_HAS_EXPIRED, 0);
}

Test(delegation_verify, not_yet_valid_leaf_not_laundered)
{
    issued_not_laundered(f.ca, 1, 30, 0, X509_V_ERR_CERT_NOT_YET_VALID, 0);
}

static char crl_path[700];

static void check_crl(SSL_CTX *ctx)
{
    hs_load_crl(ctx, crl_path);
}

Test(delegation_verify, revoked_not_laundered)
{
    ts_cert *c = fx_issue(f.ca, PROVIDER, -1, 30, 0);
    snprintf(crl_path, sizeof(crl_path), "%s/revoked.crl", f.dir);
    cr_assert_eq(ts_ca_write_crl(f.ca, &c, 1, crl_path), 0);
    configure_ctx = check_crl;
    expect_not_laundered(c, X509_V_ERR_CERT_REVOKED, 0);
    configure_ctx = NULL;
    ts_cert_free(c);
}

Test(delegation_verify, untrusted_chain_not_laundered_nonblocking)
{
    untrusted_not_laundered(1);
}

Test(delegation_verify, expired_leaf_not_laundered_nonblocking)
{
    issued_not_laundered(f.ca, -30, -1, 0, X509_V_ERR_CERT_HAS_EXPIRED, 1);
}

/* The application's callback that accepts everything, on a name the delegation does not give: still a mismatch. */
Test(delegation_verify, accept_all_callback_name_not_delegated)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc("other.hosting.example.net"));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_accept_all);
    hs h = handshake(ctx);
    cr_expect(h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    SSL_CTX_free(ctx);
}

/* Start nginx; a client in POSH_MODE_PIN. */
static posh_client *pin_client(void)
{
    fx_start(&f);
    posh_config *cfg = fx_config(&f);
    cr_assert_eq(posh_config_set_mode(cfg, POSH_MODE_PIN), POSH_OK);
    return fx_client_of(cfg);
}

/* POSH_MODE_PIN makes a POSH match a trust anchor; a delegation is not a POSH match and never does. */
Test(delegation_verify, pin_mode_does_not_skip_chain_trust)
{
    ts_cert *c = fx_issue(NULL, PROVIDER, -1, 30, 1);
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    client = pin_client();
    start_server(c);
    SSL_CTX *ctx = ctx_new(1);
    hs h = handshake(ctx);
    cr_expect(!h.connected, "a self-signed certificate carrying the delegated name: %s", h.msg);
    cr_expect_eq(h.verify_result, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "%s",
                 X509_verify_cert_error_string(h.verify_result));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_accept_all);
    h = handshake(ctx);
    cr_expect_eq(h.verify_result, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "accept-all: %s",
                 X509_verify_cert_error_string(h.verify_result));
    SSL_CTX_free(ctx);

    /* Non-blocking, the same. */
    ctx = ctx_new(1);
    cr_assert_eq(SSL_CTX_set_posh_nonblocking(ctx, 1), 1);
    posh_client_flush(client);
    h = handshake_nb(ctx, FOO);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    SSL_CTX_free(ctx);

    /* Control: with POSH vouching for it, mode pin accepts that very certificate. */
    posh_client_flush(client);
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(c, 600));
    ctx = ctx_new(1);
    h = handshake(ctx);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED);
    SSL_CTX_free(ctx);
    ts_cert_free(c);
}

/* In mode pin a trusted chain carrying the delegated name is accepted as in mode name. */
Test(delegation_verify, pin_mode_trusted_chain_delegated)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    client = pin_client();
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    expect_delegated(handshake(ctx), "mode pin");
    SSL_CTX_free(ctx);
}

/* ---- the application's callback sees the verdict ---- */

Test(delegation_verify, app_callback_sees_the_verdict)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hs_recording_cb);
    hs_cb_reset();
    hs h = handshake(ctx);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_gt(hs_cb.calls, 0);
    cr_expect_eq(hs_cb.depth0_ok, 1, "the callback saw acceptance at depth 0");
    SSL_CTX_free(ctx);

    posh_client_flush(client);
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc("other.hosting.example.net"));
    ctx = ctx_new(1);
    hs_expect_cb_sees_mismatch(ctx, handshake);
    SSL_CTX_free(ctx);
}

/* ---- whose delegation: the reference identifier's ---- */

static void reference_foo(SSL *ssl)
{
    cr_assert_eq(SSL_set_posh_reference(ssl, FOO), 1);
}

Test(delegation_verify, the_reference_identifier_delegates)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    /* hosting.example.net delegates nothing: its connection is rejected whatever FOO says. */
    hs h = handshake_with(ctx, HOSTING, NULL);
    cr_expect(!h.connected, "%s", h.msg);
    cr_expect(strstr(h.msg, "https://" HOSTING XMPP_URI) != NULL, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0);
    /* With FOO as the reference identifier, FOO's delegation applies. */
    h = handshake_with(ctx, HOSTING, reference_foo);
    expect_delegated(h, "reference");
    SSL_CTX_free(ctx);
}

/* ---- threads: one delegation lookup for many handshakes ---- */

#define THREADS 8
#define PER_THREAD 4

Test(delegation_verify, threads_share_one_delegation_lookup)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = ctx_new(1);
    cr_expect_eq(hs_parallel(ctx, handshake, POSH_STATUS_DELEGATED, THREADS, PER_THREAD), THREADS * PER_THREAD);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 1, "one delegation lookup for every handshake");
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1, "one POSH lookup for every handshake");
    SSL_CTX_free(ctx);
}

/* ======================================================================================================= */
/* Non-blocking verification: the same verdicts                                                            */

TestSuite(delegation_nonblocking, .init = setup, .fini = teardown, .timeout = 120);

static SSL_CTX *nb_ctx(int delegation)
{
    SSL_CTX *ctx = ctx_new(delegation);
    cr_assert_eq(SSL_CTX_set_posh_nonblocking(ctx, 1), 1);
    return ctx;
}

Test(delegation_nonblocking, delegated_accepted)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb(ctx, FOO);
    expect_delegated(h, "non-blocking, cold");
    cr_expect_geq(h.suspensions, 2, "a POSH lookup, then a delegation lookup, each without blocking (%d)",
                  h.suspensions);
    h = handshake_nb(ctx, FOO);
    expect_delegated(h, "non-blocking, warm");
    cr_expect_eq(h.suspensions, 0, "both answers cached: no suspension");
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 1);
    cr_expect_eq(fx_requests(&f, FOO, RFC7711_PATH), 1);
    SSL_CTX_free(ctx);
}

Test(delegation_nonblocking, name_not_on_the_certificate_rejected)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc("other.hosting.example.net"));
    start_server(f.svc);
    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb(ctx, FOO);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED);
    cr_expect_eq(h.err, POSH_ERR_NO_POSH, "%s", h.msg);
    cr_expect(strstr(h.msg, "none of the 1 names delegated by " XMPP_URL) != NULL, "%s", h.msg);
    SSL_CTX_free(ctx);
}

Test(delegation_nonblocking, off_unless_asked)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = nb_ctx(0);
    hs h = handshake_nb(ctx, FOO);
    cr_expect(!h.connected);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0);
    SSL_CTX_free(ctx);
}

Test(delegation_nonblocking, posh_fingerprints_first)
{
    fx_put_free(&f, FOO, RFC7711_PATH, fx_doc1(f.svc, 600));
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb(ctx, FOO);
    cr_expect(h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_ACCEPTED, "%s", h.msg);
    cr_expect_eq(h.suspensions, 1, "one lookup: POSH's");
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0);
    SSL_CTX_free(ctx);
}

/*
 * Nothing is cached (POSH's 404 lives a negative TTL of 0, the delegation document says no-store): a suspended
 * verification must still reach its verdict from the answers it obtained at each stage, not ask again forever.
 */
Test(delegation_nonblocking, answers_held_across_stages_when_nothing_is_cached)
{
    char connect_to[128], *doc = deleg_doc(PROVIDER);
    ts_evil_route_opts o = {.status = 200, .body = doc, .headers = "Cache-Control: no-store\r\n"};
    start_evil(&o, XMPP_URI, connect_to, sizeof(connect_to));
    client = clocked(0, 0, connect_to);
    start_server(f.svc);

    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb(ctx, FOO);
    expect_delegated(h, "non-blocking, nothing cached");
    cr_expect_geq(h.suspensions, 2);
    long first = ts_evil_requests(evil, XMPP_URI);
    cr_expect_eq(first, 1, "one delegation request for one verification");
    h = handshake_nb(ctx, FOO);
    expect_delegated(h, "again");
    cr_expect_eq(ts_evil_requests(evil, XMPP_URI), 2, "no-store: asked again for the next verification");
    SSL_CTX_free(ctx);

    /* Blocking, the same verdict. */
    ctx = ctx_new(1);
    expect_delegated(handshake(ctx), "blocking, nothing cached");
    SSL_CTX_free(ctx);
    free(doc);
}

/* A reference identifier set for the handshake survives both suspensions (POSH's lookup, then the delegation's). */
Test(delegation_nonblocking, reference_kept_across_stages)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb_with(ctx, HOSTING, reference_foo);
    expect_delegated(h, "non-blocking, reference");
    cr_expect_geq(h.suspensions, 2, "%d", h.suspensions);
    cr_expect_eq(fx_requests(&f, HOSTING, NULL), 0, "nothing asked of the host name's domain");
    h = handshake_nb_with(ctx, HOSTING, NULL);
    cr_expect(!h.connected, "without the reference: the host's own domain, which delegates nothing");
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    SSL_CTX_free(ctx);
}

/* ======================================================================================================= */
/* POSH_DELEGATION: the environment's switch (how the shim turns delegation on)                             */

TestSuite(delegation_env, .init = setup, .fini = teardown, .timeout = 120);

Test(delegation_env, values)
{
    static const struct {
        const char *value;
        posh_err err;
        int on;
    } cases[] = {
        {"1", POSH_OK, 1}, {"0", POSH_OK, 0},          {"", POSH_OK, -1},           {"yes", POSH_ERR_CONFIG, -1},
        {"2", POSH_ERR_CONFIG, -1}, {"true", POSH_ERR_CONFIG, -1}, {" 1", POSH_ERR_CONFIG, -1}, {"01", POSH_ERR_CONFIG, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int before = 0; before < 2; before++) {
            posh_config *cfg = posh_config_new();
            cr_assert_not_null(cfg);
            cr_expect_eq(cfg->delegation, 0, "off by default");
            cr_assert_eq(posh_config_set_delegation(cfg, before), POSH_OK);
            setenv("POSH_DELEGATION", cases[i].value, 1);
            posh_err err = posh_config_load_env(cfg);
            cr_expect_eq(err, cases[i].err, "POSH_DELEGATION=\"%s\"", cases[i].value);
            cr_expect_eq(cfg->delegation, cases[i].on >= 0 ? cases[i].on : before, "POSH_DELEGATION=\"%s\", before %d",
                         cases[i].value, before);
            if (err != POSH_OK)
                cr_expect(strstr(posh_config_error(cfg), "POSH_DELEGATION") != NULL, "%s", posh_config_error(cfg));
            posh_config_free(cfg);
        }
    }
    unsetenv("POSH_DELEGATION");
}

/* The default client, configured from the environment, on a context that never asked for delegation. */
Test(delegation_env, default_client_with_posh_delegation)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    fx_start(&f);
    fx_export_env(&f);
    setenv("POSH_DELEGATION", "1", 1);
    server = ts_tls_start(ts_cert_x509(f.svc), NULL, ts_cert_key(f.svc));
    cr_assert_not_null(server);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, NULL, "xmpp-server");
    expect_delegated(handshake(ctx), "POSH_DELEGATION=1");
    SSL_CTX_free(ctx);
}

Test(delegation_env, default_client_without_posh_delegation)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    fx_start(&f);
    fx_export_env(&f);
    unsetenv("POSH_DELEGATION");
    server = ts_tls_start(ts_cert_x509(f.svc), NULL, ts_cert_key(f.svc));
    cr_assert_not_null(server);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, NULL, "xmpp-server");
    hs h = handshake(ctx);
    cr_expect(!h.connected, "off unless asked: %s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0);
    SSL_CTX_free(ctx);
}

/* ======================================================================================================= */
/* More of verification: the application's host flags, per-connection POSH, answers shared with lookups    */

static void no_wildcards(SSL *ssl)
{
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_WILDCARDS);
}

/* The delegated name is checked as OpenSSL would check any host name: with the application's host flags. */
Test(delegation_verify, wildcard_certificate_and_host_flags)
{
    ts_cert *wild = fx_issue(f.ca, "*.hosting.example.net", -1, 30, 0);
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(wild);
    SSL_CTX *ctx = ctx_new(1);
    expect_delegated(handshake(ctx), "a wildcard certificate covers the delegated name");
    hs h = handshake_with(ctx, FOO, no_wildcards);
    cr_expect(!h.connected, "the application refuses wildcards: so does the delegation: %s", h.msg);
    cr_expect_eq(h.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
    cr_expect_neq(h.status, POSH_STATUS_DELEGATED, "%s", h.msg);
    SSL_CTX_free(ctx);
    ts_cert_free(wild);
}

static void posh_on_this_connection(SSL *ssl)
{
    cr_assert_eq(SSL_set_posh_verify(ssl, "xmpp-server"), 1);
}

/*
 * POSH enabled per connection (SSL_set_posh_verify) and delegation asked for on the context: refused (0) while
 * nothing installed POSH on the context, and the connection then gets no delegation; accepted (1) once a
 * connection's SSL_set_posh_verify() installed it, and the connection then gets it (posh.h).
 */
Test(delegation_verify, per_connection_posh)
{
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    SSL_CTX *ctx = hs_client_ctx(f.ca_file, client, NULL);
    cr_expect_eq(SSL_CTX_set_posh_delegation(ctx, 1), 0, "POSH not enabled on the context yet");
    hs h = handshake_with(ctx, FOO, posh_on_this_connection);
    cr_expect(!h.connected, "%s", h.msg);
    cr_expect_eq(h.status, POSH_STATUS_REJECTED, "%s", h.msg);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 0, "delegation was refused, so never read");

    /* posh.h: once SSL_set_posh_verify() installed POSH on the context, the switch applies to such connections. */
    cr_expect_eq(SSL_CTX_set_posh_delegation(ctx, 1), 1, "POSH is installed on the context now");
    h = handshake_with(ctx, FOO, posh_on_this_connection);
    expect_delegated(h, "per-connection POSH, delegation on the context");
    SSL_CTX_free(ctx);
}

/* A blocking lookup fills the caches a non-blocking handshake reads: no suspension at all. */
Test(delegation_nonblocking, shares_the_caches_of_blocking_lookups)
{
    posh_result *r = NULL;
    fx_put_free(&f, FOO, XMPP_FILE, deleg_doc(PROVIDER));
    start_server(f.svc);
    cr_assert_eq(posh_lookup(client, FOO, "xmpp-server", &r), POSH_ERR_NO_POSH);
    posh_result_free(r);
    cr_assert_eq(posh_lookup_delegation(client, FOO, "xmpp-server", &r), POSH_OK);
    posh_result_free(r);
    SSL_CTX *ctx = nb_ctx(1);
    hs h = handshake_nb(ctx, FOO);
    expect_delegated(h, "from the caches");
    cr_expect_eq(h.suspensions, 0);
    cr_expect_eq(fx_requests(&f, FOO, XMPP_URI), 1);
    SSL_CTX_free(ctx);
}
