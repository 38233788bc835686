/*
 * test_doc.c - the document parser as a table of (bytes, expected error, expected shape), then every limit
 * just under and just over, the messages, and the contract on *doc. Also posh_msg(), which the messages use.
 */
#include "posh_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* The hashes of "abc", base64 as publishers write them (SHA-224 and SHA-512 padded with "==", SHA-384 none). */
#define FP1 "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="
#define FP224 "Iwl9IjQF2CKGQqR3vaJVsyqtvOS9oLP342ydpw=="
#define FP256 "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
#define FP384 "ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn"
#define FP512 "3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="

#define D256 "{\"sha-256\":\"" FP256 "\"}"
/* A fingerprints document with the given descriptors (JSON text of the array's elements). */
#define FPS(d) "{\"fingerprints\":[" d "],\"expires\":60}"
/* A one-descriptor document with the given expires (JSON text of the value). */
#define EXP(e) "{\"fingerprints\":[" D256 "],\"expires\":" e "}"
/* A reference document with the given url (JSON text of the value). */
#define REF(u) "{\"url\":" u ",\"expires\":60}"

#define BIT(h) (1u << (h))

typedef struct doc_case {
    const char *name;
    const char *json;
    size_t len; /* 0: strlen(json) */
    posh_err err;
    /* checked when err == POSH_OK */
    posh_doc_kind kind;
    int64_t expires;
    size_t n;          /* descriptors */
    unsigned present0; /* present bits of the first descriptor */
} doc_case;

#define OK_FPS(n, p) POSH_OK, POSH_DOC_FINGERPRINTS, 60, n, p
#define OK_REF POSH_OK, POSH_DOC_REFERENCE, 60, 0, 0
#define FAIL(e) e, 0, 0, 0, 0

static const doc_case doc_cases[] = {
    /* well-formed documents */
    {"one sha-256", FPS(D256), 0, OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"every hash in one descriptor",
     FPS("{\"sha-1\":\"" FP1 "\",\"sha-224\":\"" FP224 "\",\"sha-256\":\"" FP256 "\",\"sha-384\":\"" FP384
         "\",\"sha-512\":\"" FP512 "\"}"),
     0, OK_FPS(1, BIT(POSH_HASH_SHA1) | BIT(POSH_HASH_SHA224) | BIT(POSH_HASH_SHA256) | BIT(POSH_HASH_SHA384) |
                      BIT(POSH_HASH_SHA512))},
    {"two descriptors", FPS(D256 ",{\"sha-1\":\"" FP1 "\"}"), 0, OK_FPS(2, BIT(POSH_HASH_SHA256))},
    {"unpadded base64", FPS("{\"sha-256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0\"}"), 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"unpadded sha-512", FPS("{\"sha-512\":\"3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2"
                             "Q86A4qmslPpUyknw\"}"),
     0, OK_FPS(1, BIT(POSH_HASH_SHA512))},
    {"unknown hash names are ignored", FPS("{\"sha-3-256\":1,\"md5\":\"x\",\"sha-256\":\"" FP256 "\"}"), 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"hash names are case-sensitive", FPS("{\"SHA-256\":\"not base64 at all\"}"), 0, OK_FPS(1, 0)},
    {"sha256 without hyphen is unknown", FPS("{\"sha256\":42}"), 0, OK_FPS(1, 0)},
    {"empty descriptor kept, present 0", FPS("{}"), 0, OK_FPS(1, 0)},
    {"descriptor of unknown names only", FPS("{\"md5\":\"x\"}," D256), 0, OK_FPS(2, 0)},
    {"unknown top-level members ignored",
     "{\"comment\":\"hi\",\"fingerprints\":[" D256 "],\"x\":{\"y\":[1,2,null,true]},\"expires\":60,\"z\":1.5e3}", 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"member order does not matter", "{\"expires\":60,\"fingerprints\":[" D256 "]}", 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"whitespace around and between tokens", " \r\n\t{ \"fingerprints\" : [ " D256 " ] ,\n\"expires\"\t:\r60 } \n", 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"escaped characters in an unknown member", FPS(D256 ",{\"n\\u00e9\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\"}"), 0,
     OK_FPS(2, BIT(POSH_HASH_SHA256))},
    /* json-c keeps the last of duplicated names: that one is checked and used */
    {"duplicate hash: last (valid) wins", FPS("{\"sha-256\":\"bad\",\"sha-256\":\"" FP256 "\"}"), 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"duplicate hash: last (bad) wins", FPS("{\"sha-256\":\"" FP256 "\",\"sha-256\":\"bad\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"duplicate expires: last wins", "{\"fingerprints\":[" D256 "],\"expires\":0,\"expires\":60}", 0,
     OK_FPS(1, BIT(POSH_HASH_SHA256))},
    {"reference", REF("\"https://hosting.example.net/.well-known/posh/xmpp-server.json\""), 0, OK_REF},
    {"reference with port, query, fragment", REF("\"https://h.example:8443/p?q=1#f\""), 0, OK_REF},
    {"reference with escaped slash", REF("\"https:\\/\\/h.example\\/p\""), 0, OK_REF},

    /* not one JSON object */
    {"empty", "", 0, FAIL(POSH_ERR_JSON)},
    {"whitespace only", " \n", 0, FAIL(POSH_ERR_JSON)},
    {"top-level array", "[" FPS(D256) "]", 0, FAIL(POSH_ERR_JSON)},
    {"top-level string", "\"x\"", 0, FAIL(POSH_ERR_JSON)},
    {"top-level number", "60", 0, FAIL(POSH_ERR_JSON)},
    {"top-level null", "null", 0, FAIL(POSH_ERR_JSON)},
    {"top-level true", "true", 0, FAIL(POSH_ERR_JSON)},
    {"unterminated object", "{\"fingerprints\":[" D256 "],\"expires\":60", 0, FAIL(POSH_ERR_JSON)},
    {"unterminated string", "{\"fingerprints", 0, FAIL(POSH_ERR_JSON)},
    {"trailing garbage", FPS(D256) "x", 0, FAIL(POSH_ERR_JSON)},
    {"trailing second object", FPS(D256) "{}", 0, FAIL(POSH_ERR_JSON)},
    {"trailing second object after space", FPS(D256) " {}", 0, FAIL(POSH_ERR_JSON)},
    {"trailing comma", "{\"fingerprints\":[" D256 "],\"expires\":60,}", 0, FAIL(POSH_ERR_JSON)},
    {"trailing comma in array", FPS(D256 ","), 0, FAIL(POSH_ERR_JSON)},
    {"trailing form feed", FPS(D256) "\f", 0, FAIL(POSH_ERR_JSON)},
    {"trailing vertical tab", FPS(D256) "\v", 0, FAIL(POSH_ERR_JSON)},
    {"trailing NUL", FPS(D256) "\0", sizeof(FPS(D256)), FAIL(POSH_ERR_JSON)},
    {"NUL between tokens", "{\"fingerprints\":[" D256 "],\0\"expires\":60}", sizeof(FPS(D256)), FAIL(POSH_ERR_JSON)},
    {"NUL inside a string", "{\"fingerprints\":[" D256 "],\"x\":\"a\0b\",\"expires\":60}",
     sizeof("{\"fingerprints\":[" D256 "],\"x\":\"a\0b\",\"expires\":60}") - 1, FAIL(POSH_ERR_JSON)},
    {"escaped NUL in a hash name", FPS("{\"sha-256\\u0000x\":\"" FP256 "\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"escaped NUL after a hash name", FPS("{\"sha-256\\u0000\":\"" FP256 "\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"escaped NUL in a value", FPS(D256 ",{\"x\":\"a\\u0000\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"escaped NUL in a top-level name", "{\"expires\\u0000x\":1,\"fingerprints\":[" D256 "],\"expires\":60}", 0,
     FAIL(POSH_ERR_JSON)},
    {"escaped backslash then u0000 is text", FPS(D256 ",{\"x\":\"\\\\u0000\"}"), 0, OK_FPS(2, BIT(POSH_HASH_SHA256))},
    {"single-quoted name", "{'fingerprints':[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_JSON)},
    {"single-quoted value", "{\"fingerprints\":[{\"sha-256\":'" FP256 "'}],\"expires\":60}", 0, FAIL(POSH_ERR_JSON)},
    {"unquoted name", "{fingerprints:[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_JSON)},
    {"comment", "{/* c */\"fingerprints\":[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_JSON)},
    {"line comment", "{\"fingerprints\":[" D256 "],\"expires\":60}// c", 0, FAIL(POSH_ERR_JSON)},
    {"NaN", EXP("NaN"), 0, FAIL(POSH_ERR_JSON)},
    {"Infinity", EXP("Infinity"), 0, FAIL(POSH_ERR_JSON)},
    {"-Infinity", EXP("-Infinity"), 0, FAIL(POSH_ERR_JSON)},
    {"nan", EXP("nan"), 0, FAIL(POSH_ERR_JSON)},
    {"1. is not a number", EXP("1."), 0, FAIL(POSH_ERR_JSON)},
    {"-.5 is not a number", EXP("-.5"), 0, FAIL(POSH_ERR_JSON)},
    {"leading zeros 00", EXP("00"), 0, FAIL(POSH_ERR_JSON)},
    {"leading zero -01", EXP("-01"), 0, FAIL(POSH_ERR_JSON)},
    {"leading zero 01.5", EXP("01.5"), 0, FAIL(POSH_ERR_JSON)},
    {"0 exponent 1e-05 is a number (a double)", EXP("1e-05"), 0, FAIL(POSH_ERR_EXPIRES)},
    {".5 is not a number", EXP(".5"), 0, FAIL(POSH_ERR_JSON)},
    {"leading zero", EXP("060"), 0, FAIL(POSH_ERR_JSON)},
    {"plus sign", EXP("+60"), 0, FAIL(POSH_ERR_JSON)},
    {"hex", EXP("0x3c"), 0, FAIL(POSH_ERR_JSON)},
    {"True", EXP("True"), 0, FAIL(POSH_ERR_JSON)},
    {"raw tab in a string", FPS(D256 ",{\"x\":\"a\tb\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"raw newline in a string", FPS(D256 ",{\"x\":\"a\nb\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"bad escape", FPS(D256 ",{\"x\":\"\\x41\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"invalid UTF-8", FPS(D256 ",{\"x\":\"\xff\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"overlong UTF-8", FPS(D256 ",{\"x\":\"\xc0\xaf\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"overlong 3-byte UTF-8", FPS(D256 ",{\"x\":\"\xe0\x80\xaf\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"overlong 4-byte UTF-8", FPS(D256 ",{\"x\":\"\xf0\x80\x80\xaf\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"UTF-8 surrogate", FPS(D256 ",{\"x\":\"\xed\xa0\x80\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"UTF-8 above U+10FFFF", FPS(D256 ",{\"x\":\"\xf4\x90\x80\x80\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"UTF-8 truncated at the end", FPS(D256 ",{\"x\":\"\xe2\x82\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"UTF-8 lone continuation", FPS(D256 ",{\"x\":\"\x80\"}"), 0, FAIL(POSH_ERR_JSON)},
    {"UTF-8 outside strings", FPS(D256) "\xc2\xa0", 0, FAIL(POSH_ERR_JSON)},
    {"valid UTF-8 of every length", FPS(D256 ",{\"\xc3\xa9\":\"\xe2\x82\xac\xf0\x9f\x94\x91\xf4\x8f\xbf\xbf\"}"), 0,
     OK_FPS(2, BIT(POSH_HASH_SHA256))},
    {"byte order mark", "\xef\xbb\xbf" FPS(D256), 0, FAIL(POSH_ERR_JSON)},
    {"missing colon", "{\"fingerprints\"[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_JSON)},
    {"missing comma", "{\"fingerprints\":[" D256 "] \"expires\":60}", 0, FAIL(POSH_ERR_JSON)},

    /* not a POSH document */
    {"empty object", "{}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"expires only", "{\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"both url and fingerprints", "{\"url\":\"https://h.example/\",\"fingerprints\":[" D256 "],\"expires\":60}", 0,
     FAIL(POSH_ERR_DOCUMENT)},
    {"both, url null", "{\"url\":null,\"fingerprints\":[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"both, kind checked before expires", "{\"url\":\"https://h.example/\",\"fingerprints\":[" D256 "]}", 0,
     FAIL(POSH_ERR_DOCUMENT)},
    {"neither, expires missing too", "{\"x\":1}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"Fingerprints with a capital", "{\"Fingerprints\":[" D256 "],\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"fingerprints empty", FPS(""), 0, FAIL(POSH_ERR_DOCUMENT)},
    {"fingerprints an object", "{\"fingerprints\":" D256 ",\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"fingerprints a string", "{\"fingerprints\":\"" FP256 "\",\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"fingerprints null", "{\"fingerprints\":null,\"expires\":60}", 0, FAIL(POSH_ERR_DOCUMENT)},
    {"descriptor a string", FPS("\"" FP256 "\""), 0, FAIL(POSH_ERR_DOCUMENT)},
    {"descriptor an array", FPS("[" D256 "]"), 0, FAIL(POSH_ERR_DOCUMENT)},
    {"descriptor null", FPS("null"), 0, FAIL(POSH_ERR_DOCUMENT)},
    {"descriptor a number", FPS("1"), 0, FAIL(POSH_ERR_DOCUMENT)},
    {"second descriptor not an object", FPS(D256 ",true"), 0, FAIL(POSH_ERR_DOCUMENT)},

    /* fingerprints */
    {"sha-256 a number", FPS("{\"sha-256\":12345}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 null", FPS("{\"sha-256\":null}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 an array", FPS("{\"sha-256\":[\"" FP256 "\"]}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 an object", FPS("{\"sha-256\":{}}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 true", FPS("{\"sha-256\":true}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 empty", FPS("{\"sha-256\":\"\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-256 holding a sha-1", FPS("{\"sha-256\":\"" FP1 "\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-1 holding a sha-256", FPS("{\"sha-1\":\"" FP256 "\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-384 holding a sha-512", FPS("{\"sha-384\":\"" FP512 "\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"sha-224 one byte short", FPS("{\"sha-224\":\"Iwl9IjQF2CKGQqR3vaJVsyqtvOS9oLP342yd\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"hex instead of base64",
     FPS("{\"sha-256\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"URL-safe alphabet", FPS("{\"sha-256\":\"ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"padding too long", FPS("{\"sha-256\":\"" FP256 "=\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"padding one short", FPS("{\"sha-512\":\"3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2"
                              "Q86A4qmslPpUyknw=\"}"),
     0, FAIL(POSH_ERR_FINGERPRINT)},
    {"padding bits set", FPS("{\"sha-256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"space inside", FPS("{\"sha-256\":\"ungWv48Bz+pBQUDeXa4iI7ADYaOW F3qctBD/YfIAFa0=\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"escaped newline at the end", FPS("{\"sha-256\":\"" FP256 "\\n\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"escaped newline inside", FPS("{\"sha-256\":\"ungWv48Bz+pBQUDeXa4i\\nI7ADYaOWF3qctBD/YfIAFa0=\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},
    {"bad second descriptor", FPS(D256 ",{\"sha-256\":\"x\"}"), 0, FAIL(POSH_ERR_FINGERPRINT)},
    {"bad known next to good known", FPS("{\"sha-512\":\"" FP512 "\",\"sha-1\":\"nope\"}"), 0,
     FAIL(POSH_ERR_FINGERPRINT)},

    /* expires */
    {"expires 1", EXP("1"), 0, POSH_OK, POSH_DOC_FINGERPRINTS, 1, 1, BIT(POSH_HASH_SHA256)},
    {"expires INT64_MAX", EXP("9223372036854775807"), 0, POSH_OK, POSH_DOC_FINGERPRINTS, INT64_MAX, 1,
     BIT(POSH_HASH_SHA256)},
    {"expires INT64_MAX + 1 clamps", EXP("9223372036854775808"), 0, POSH_OK, POSH_DOC_FINGERPRINTS, INT64_MAX, 1,
     BIT(POSH_HASH_SHA256)},
    {"expires UINT64_MAX clamps", EXP("18446744073709551615"), 0, POSH_OK, POSH_DOC_FINGERPRINTS, INT64_MAX, 1,
     BIT(POSH_HASH_SHA256)},
    {"expires beyond UINT64_MAX clamps", EXP("123456789012345678901234567890"), 0, POSH_OK, POSH_DOC_FINGERPRINTS,
     INT64_MAX, 1, BIT(POSH_HASH_SHA256)},
    {"expires missing", "{\"fingerprints\":[" D256 "]}", 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 0", EXP("0"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires -0", EXP("-0"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires -1", EXP("-1"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires INT64_MIN", EXP("-9223372036854775808"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires below INT64_MIN", EXP("-99999999999999999999"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 1.5", EXP("1.5"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 60.0", EXP("60.0"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 1e3", EXP("1e3"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 1E3", EXP("1E3"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires 6e+1", EXP("6e+1"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires string", EXP("\"60\""), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires true", EXP("true"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires false", EXP("false"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires null", EXP("null"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires array", EXP("[60]"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires object", EXP("{\"s\":60}"), 0, FAIL(POSH_ERR_EXPIRES)},
    {"reference without expires", "{\"url\":\"https://h.example/\"}", 0, FAIL(POSH_ERR_EXPIRES)},
    {"reference expires 0", "{\"url\":\"https://h.example/\",\"expires\":0}", 0, FAIL(POSH_ERR_EXPIRES)},
    {"expires checked before fingerprints", "{\"fingerprints\":[{\"sha-256\":1}],\"expires\":0}", 0,
     FAIL(POSH_ERR_EXPIRES)},

    /* reference url */
    {"url http", REF("\"http://h.example/posh.json\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url ftp", REF("\"ftp://h.example/posh.json\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url relative", REF("\"/.well-known/posh/xmpp-server.json\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url scheme-relative", REF("\"//h.example/x\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url userinfo", REF("\"https://user@h.example/\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url userinfo with password", REF("\"https://user:pw@h.example/\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url empty host", REF("\"https:///x.json\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url scheme only", REF("\"https://\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url empty", REF("\"\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url space", REF("\"https://h.example/a b\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url escaped control", REF("\"https://h.example/\\u0001\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url escaped newline", REF("\"https://h.example/\\n\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url non-ASCII", REF("\"https://h.example/\\u00e9\""), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url a number", REF("42"), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url null", REF("null"), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url an array", REF("[\"https://h.example/\"]"), 0, FAIL(POSH_ERR_REFERENCE_URL)},
    {"url an object", REF("{}"), 0, FAIL(POSH_ERR_REFERENCE_URL)},
};

static void check_case(const doc_case *c)
{
    posh_doc doc;
    char msg[POSH_MSG_LEN];
    size_t len = c->len ? c->len : strlen(c->json);
    posh_err err;

    memset(&doc, 0x5a, sizeof(doc)); /* garbage in: the parser must not read or free what was there */
    err = posh_doc_parse(c->json, len, &doc, msg, sizeof(msg));
    cr_expect_eq(err, c->err, "%s: got %d (%s), expected %d", c->name, err, msg, c->err);
    if (err != POSH_OK) {
        cr_expect_neq(msg[0], '\0', "%s: no message", c->name);
        cr_expect(doc.descriptors == NULL && doc.url == NULL && doc.n_descriptors == 0 && doc.expires == 0,
                  "%s: *doc not left empty", c->name);
        return;
    }
    if (c->err == POSH_OK) {
        cr_expect_str_eq(msg, "", "%s", c->name);
        cr_expect_eq(doc.kind, c->kind, "%s: kind", c->name);
        cr_expect_eq(doc.expires, c->expires, "%s: expires %lld", c->name, (long long)doc.expires);
        cr_expect_eq(doc.n_descriptors, c->n, "%s: %zu descriptors", c->name, doc.n_descriptors);
        if (c->kind == POSH_DOC_REFERENCE) {
            cr_expect_not_null(doc.url, "%s", c->name);
            cr_expect_null(doc.descriptors, "%s", c->name);
        } else {
            cr_expect_null(doc.url, "%s", c->name);
            cr_expect_eq(doc.descriptors[0].present, c->present0, "%s: present %#x", c->name,
                         doc.descriptors[0].present);
        }
    }
    posh_doc_clear(&doc);
}

Test(doc, table)
{
    size_t i;

    for (i = 0; i < sizeof(doc_cases) / sizeof(doc_cases[0]); i++)
        check_case(&doc_cases[i]);
}

/* The decoded digests are the hashes of "abc", each in its own slot. */
Test(doc, digests_decoded)
{
    static const char json[] = FPS("{\"sha-1\":\"" FP1 "\",\"sha-224\":\"" FP224 "\",\"sha-256\":\"" FP256
                                   "\",\"sha-384\":\"" FP384 "\",\"sha-512\":\"" FP512 "\"}");
    static const char *const names[POSH_HASH_COUNT] = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"};
    posh_doc doc;
    int h;

    cr_assert_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, NULL, 0), POSH_OK);
    for (h = 0; h < POSH_HASH_COUNT; h++) {
        unsigned char want[EVP_MAX_MD_SIZE];
        size_t want_len = 0;
        cr_assert_eq(EVP_Q_digest(NULL, names[h], NULL, "abc", 3, want, &want_len), 1);
        cr_assert_eq(want_len, posh_hash_len((posh_hash)h));
        cr_expect_arr_eq(doc.descriptors[0].digest[h], want, want_len, "%s", names[h]);
    }
    posh_doc_clear(&doc);
}

Test(doc, reference_url_copied)
{
    static const char json[] = REF("\"https:\\/\\/hosting.example.net\\/.well-known\\/posh\\/xmpp-server.json\"");
    posh_doc doc;

    cr_assert_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, NULL, 0), POSH_OK);
    cr_expect_eq(doc.kind, POSH_DOC_REFERENCE);
    cr_expect_str_eq(doc.url, "https://hosting.example.net/.well-known/posh/xmpp-server.json");
    posh_doc_clear(&doc);
}

/* The length is the only end: the buffer need not be NUL-terminated, and what follows is never read. */
Test(doc, explicit_length)
{
    static const char json[] = FPS(D256);
    char *buf = malloc(sizeof(json) - 1);
    posh_doc doc;

    cr_assert_not_null(buf);
    memcpy(buf, json, sizeof(json) - 1); /* no NUL anywhere: ASan catches a read past the end */
    cr_expect_eq(posh_doc_parse(buf, sizeof(json) - 1, &doc, NULL, 0), POSH_OK);
    posh_doc_clear(&doc);
    cr_expect_eq(posh_doc_parse(FPS(D256) "garbage", sizeof(json) - 1, &doc, NULL, 0), POSH_OK);
    posh_doc_clear(&doc);
    cr_expect_eq(posh_doc_parse(buf, sizeof(json) - 2, &doc, NULL, 0), POSH_ERR_JSON, "one byte short");
    free(buf);
}

/* ---- limits, each just under and just over ---- */

/* A growable string for building large documents. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void text_add(text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        cr_assert_not_null(t->s);
    }
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

static void text_repeat(text *t, const char *s, size_t n)
{
    while (n-- > 0)
        text_add(t, s);
}

static posh_err parse_text(text *t, posh_doc *doc, char *msg, size_t msglen)
{
    posh_err err = posh_doc_parse(t->s, t->len, doc, msg, msglen);
    free(t->s);
    memset(t, 0, sizeof(*t));
    return err;
}

static posh_err parse_descriptors(size_t n, size_t *got)
{
    text t = {0};
    posh_doc doc;
    posh_err err;
    size_t i;

    text_add(&t, "{\"expires\":60,\"fingerprints\":[");
    for (i = 0; i < n; i++)
        text_add(&t, i == 0 ? D256 : "," D256);
    text_add(&t, "]}");
    err = parse_text(&t, &doc, NULL, 0);
    *got = doc.n_descriptors;
    posh_doc_clear(&doc);
    return err;
}

Test(doc_limits, descriptor_count)
{
    size_t got;

    cr_expect_eq(parse_descriptors(POSH_MAX_DESCRIPTORS, &got), POSH_OK);
    cr_expect_eq(got, POSH_MAX_DESCRIPTORS);
    cr_expect_eq(parse_descriptors(POSH_MAX_DESCRIPTORS + 1, &got), POSH_ERR_DOCUMENT);
    cr_expect_eq(got, 0);
    cr_expect_eq(parse_descriptors(10000, &got), POSH_ERR_DOCUMENT);
}

/* A document whose unknown member "x" nests values depth deep: objects and arrays alternate, innermost a 1. */
static posh_err parse_depth(size_t depth, int innermost_empty)
{
    text t = {0};
    posh_doc doc;
    posh_err err;
    size_t i, containers = depth - 2; /* the document itself is one level, the innermost value another */

    text_add(&t, "{\"fingerprints\":[" D256 "],\"expires\":60,\"x\":");
    for (i = 0; i < containers; i++)
        text_add(&t, i % 2 ? "{\"y\":" : "[");
    text_add(&t, innermost_empty ? "[]" : "1");
    for (i = containers; i-- > 0;)
        text_add(&t, i % 2 ? "}" : "]");
    text_add(&t, "}");
    err = parse_text(&t, &doc, NULL, 0);
    posh_doc_clear(&doc);
    return err;
}

/* json-c counts every value on the path, the innermost scalar included; 8 is 3 more than a document needs. */
Test(doc_limits, json_depth)
{
    cr_expect_eq(parse_depth(POSH_MAX_JSON_DEPTH, 0), POSH_OK, "scalar at the limit");
    cr_expect_eq(parse_depth(POSH_MAX_JSON_DEPTH + 1, 0), POSH_ERR_JSON, "scalar one over");
    cr_expect_eq(parse_depth(POSH_MAX_JSON_DEPTH, 1), POSH_OK, "empty container at the limit");
    cr_expect_eq(parse_depth(POSH_MAX_JSON_DEPTH + 1, 1), POSH_ERR_JSON, "empty container one over");
    cr_expect_eq(parse_depth(10000, 0), POSH_ERR_JSON, "far over: no recursion, no crash");
}

/* A document whose one descriptor has hash name with a value of n characters: "A" repeated. */
static posh_err parse_hash_string(const char *name, size_t n, char *msg, size_t msglen)
{
    text t = {0};
    posh_doc doc;
    posh_err err;

    text_add(&t, "{\"expires\":60,\"fingerprints\":[{\"");
    text_add(&t, name);
    text_add(&t, "\":\"");
    text_repeat(&t, "A", n);
    text_add(&t, "\"}]}");
    err = parse_text(&t, &doc, msg, msglen);
    posh_doc_clear(&doc);
    return err;
}

Test(doc_limits, hash_string_length)
{
    char msg[POSH_MSG_LEN];

    /* 86 symbols is SHA-512 unpadded (all zero bytes): accepted. */
    cr_expect_eq(parse_hash_string("sha-512", 86, msg, sizeof(msg)), POSH_OK, "%s", msg);
    cr_expect_eq(parse_hash_string("sha-512", POSH_MAX_HASH_STRING, msg, sizeof(msg)), POSH_ERR_FINGERPRINT);
    cr_expect(strstr(msg, "not base64") != NULL, "at the limit the value is decoded (and refused): %s", msg);
    cr_expect_eq(parse_hash_string("sha-512", POSH_MAX_HASH_STRING + 1, msg, sizeof(msg)), POSH_ERR_FINGERPRINT);
    cr_expect(strstr(msg, "longer than 128") != NULL, "over the limit it is not even decoded: %s", msg);
    cr_expect_eq(parse_hash_string("sha-256", 100000, msg, sizeof(msg)), POSH_ERR_FINGERPRINT);
    /* Unknown names are not looked at, whatever their length. */
    cr_expect_eq(parse_hash_string("sha-999", 100000, msg, sizeof(msg)), POSH_OK, "%s", msg);
}

static posh_err parse_url_of_length(size_t n, char *msg, size_t msglen)
{
    static const char prefix[] = "https://h.example/";
    text t = {0};
    posh_doc doc;
    posh_err err;

    text_add(&t, "{\"expires\":60,\"url\":\"");
    text_add(&t, prefix);
    text_repeat(&t, "a", n - (sizeof(prefix) - 1));
    text_add(&t, "\"}");
    err = parse_text(&t, &doc, msg, msglen);
    if (err == POSH_OK)
        cr_expect_eq(strlen(doc.url), n);
    posh_doc_clear(&doc);
    return err;
}

Test(doc_limits, url_length)
{
    char msg[POSH_MSG_LEN];

    cr_expect_eq(parse_url_of_length(POSH_MAX_URL_LEN, msg, sizeof(msg)), POSH_OK, "%s", msg);
    cr_expect_eq(parse_url_of_length(POSH_MAX_URL_LEN + 1, msg, sizeof(msg)), POSH_ERR_REFERENCE_URL);
    cr_expect(strstr(msg, "longer than 2048") != NULL, "%s", msg);
    cr_expect_eq(parse_url_of_length(60000, msg, sizeof(msg)), POSH_ERR_REFERENCE_URL);
}

/* ---- messages ---- */

typedef struct msg_case {
    const char *json;
    const char *msg;
} msg_case;

Test(doc_messages, name_the_member)
{
    static const msg_case cases[] = {
        {FPS(D256 "," D256 ",{\"sha-256\":\"" FP1 "\"}"), "fingerprints[2].sha-256: not base64 of a 32-byte digest"},
        {FPS("{\"sha-1\":7}"), "fingerprints[0].sha-1: expected a string, got int"},
        {FPS(D256 ",[]"), "fingerprints[1]: expected an object, got array"},
        {FPS(""), "fingerprints: 0 descriptors, expected 1 to 64"},
        {"{\"fingerprints\":{},\"expires\":60}", "fingerprints: expected an array, got object"},
        {EXP("1.5"), "expires: expected an integer, got double"},
        {EXP("\"60\""), "expires: expected an integer, got string"},
        {EXP("-5"), "expires: -5 is not a positive number of seconds"},
        {"{\"fingerprints\":[" D256 "]}", "expires: missing"},
        {"{}", "none of fingerprints, keys and url"},
        {"{\"url\":\"https://h.example/\",\"fingerprints\":[]}",
         "more than one of fingerprints, keys and url: a document is one of a fingerprints document, a JWK Set and "
         "a reference"},
        {REF("1"), "url: expected a string, got int"},
        {REF("\"http://h.example/\""), "url: not an https:// URL with a host, without userinfo, spaces or controls"},
        {"[]", "the document is not a JSON object"},
        {"{} x", "byte 3: not allowed in strict JSON here"},
        {"{} {}", "byte 3: unexpected character"},
        {REF("null"), "url: expected a string, got null"},
        {"{", "byte 1: unexpected end of document"},
        {"{'a':1}", "byte 1: not allowed in strict JSON here"},
        {"", "empty document"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        posh_doc doc;
        char msg[POSH_MSG_LEN];
        cr_expect_neq(posh_doc_parse(cases[i].json, strlen(cases[i].json), &doc, msg, sizeof(msg)), POSH_OK);
        cr_expect_str_eq(msg, cases[i].msg, "for %s", cases[i].json);
    }
}

Test(doc_messages, small_or_no_buffer)
{
    static const char json[] = FPS("{\"sha-256\":1}");
    posh_doc doc;
    char msg[8];

    cr_expect_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, NULL, 0), POSH_ERR_FINGERPRINT);
    cr_expect_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, NULL, 100), POSH_ERR_FINGERPRINT);
    msg[0] = 'x';
    cr_expect_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, msg, 0), POSH_ERR_FINGERPRINT);
    cr_expect_eq(msg[0], 'x', "msglen 0: not written");
    cr_expect_eq(posh_doc_parse(json, sizeof(json) - 1, &doc, msg, sizeof(msg)), POSH_ERR_FINGERPRINT);
    cr_expect_str_eq(msg, "fingerp", "truncated and terminated");
}

/* ---- the contract on *doc ---- */

Test(doc, arguments_and_clear)
{
    posh_doc doc;

    cr_expect_eq(posh_doc_parse(FPS(D256), strlen(FPS(D256)), NULL, NULL, 0), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_doc_parse(NULL, 5, &doc, NULL, 0), POSH_ERR_INVALID_ARGUMENT);
    cr_expect_eq(posh_doc_parse(NULL, 0, &doc, NULL, 0), POSH_ERR_JSON, "no bytes: not a document");
    cr_expect_eq(posh_doc_parse(FPS(D256), strlen(FPS(D256)), &doc, NULL, 0), POSH_OK);
    posh_doc_clear(&doc);
    cr_expect_null(doc.descriptors);
    posh_doc_clear(&doc); /* twice is harmless */
    posh_doc_clear(NULL);
}

/* ---- posh_msg ---- */

Test(posh_msg, formats_truncates_terminates)
{
    char buf[8];

    posh_msg(buf, sizeof(buf), "%s=%d", "abc", 42);
    cr_expect_str_eq(buf, "abc=42");
    posh_msg(buf, sizeof(buf), "%s", "0123456789");
    cr_expect_str_eq(buf, "0123456", "truncated to len - 1 and terminated");
    buf[0] = 'x';
    posh_msg(buf, 0, "%s", "never written");
    cr_expect_eq(buf[0], 'x');
    posh_msg(NULL, 10, "%s", "no buffer");
    posh_msg(buf, 1, "%s", "abc");
    cr_expect_str_eq(buf, "");
}
