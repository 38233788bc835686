/*
 * doc.c - parse a POSH document (fingerprints, JWK Set or reference) from bytes: strict JSON through json-c
 * within fixed limits, then every member type-checked. Pure: no I/O, no globals, no clock.
 */
#include "posh_internal.h"

#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* RFC 8259 section 2: the only bytes allowed around and between tokens. */
static bool json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool json_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* An escaped NUL: "\u0000" (json-c truncates member names there). p points at the backslash, n bytes follow. */
static bool escaped_nul(const char *p, size_t n)
{
    return n >= 6 && memcmp(p, "\\u0000", 6) == 0;
}

/*
 * The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF), n bytes available; 0 if there is none. JSON_TOKENER_VALIDATE_UTF8 lets "\xc0\xaf" through.
 */
static size_t utf8_sequence(const unsigned char *p, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte, narrower for some lead bytes */
    size_t len, i;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0; /* overlong */
    else if (p[0] == 0xed)
        hi = 0x9f; /* surrogates */
    else if (p[0] == 0xf0)
        lo = 0x90; /* overlong */
    else if (p[0] == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return len;
}

/*
 * json-c 0.16, even with JSON_TOKENER_STRICT, accepts some things that are not JSON (single-quoted member
 * names, NaN, Infinity, raw control characters in strings, "1.", overlong UTF-8) and cuts member names at an
 * escaped NUL, so that {"sha-256\u0000x": ...} would read as "sha-256". Two parsers seeing two documents is
 * how a check gets bypassed, so the raw bytes go through this pass first. Outside strings only the characters
 * of JSON tokens may appear; json-c checks the grammar. Returns true, or false with *bad_at = the offset of
 * the offending byte.
 */
static bool json_prescan(const char *buf, size_t len, size_t *bad_at)
{
    static const char token_chars[] = " \t\r\n{}[]:,-+.0123456789eEtrufalsn";
    bool in_string = false;
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (in_string) {
            size_t seq = utf8_sequence((const unsigned char *)buf + i, len - i);
            if (c < 0x20 || seq == 0)
                break;
            if (seq > 1) {
                i += seq - 1;
            } else if (c == '"') {
                in_string = false;
            } else if (c == '\\') {
                if (escaped_nul(buf + i, len - i))
                    break;
                i++; /* the escaped byte cannot end the string; json-c validates the escape itself */
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '\0' || strchr(token_chars, c) == NULL) {
            break;
        } else if (c == '.' && (i == 0 || !json_digit((unsigned char)buf[i - 1]) || i + 1 == len ||
                                !json_digit((unsigned char)buf[i + 1]))) {
            break; /* "1." and "-.5" are not JSON numbers (json-c takes "-.5") */
        } else if (c == '0' && i + 1 < len && json_digit((unsigned char)buf[i + 1]) &&
                   (i == 0 || strchr("0123456789.eE+-", buf[i - 1]) == NULL ||
                    (buf[i - 1] == '-' && (i < 2 || strchr("eE", buf[i - 2]) == NULL)))) {
            break; /* a leading zero: json-c takes "00", "-01" (as -1) and "01.5"; JSON does not */
        }
    }
    *bad_at = i;
    return i >= len;
}

static const char *tokener_error(enum json_tokener_error e)
{
    /* json-c says "continue" when the input ended inside a value: say it the way a reader understands. */
    return e == json_tokener_continue ? "unexpected end of document" : json_tokener_error_desc(e);
}

/* The bytes as exactly one JSON value of type want, within POSH_MAX_JSON_DEPTH, with only whitespace after it. */
posh_err posh_json_parse(const char *buf, size_t len, json_type want, json_object **out, char *msg, size_t msglen)
{
    json_tokener *tok = NULL;
    json_object *obj = NULL;
    posh_err err = POSH_ERR_JSON;
    size_t at;

    *out = NULL;
    if (len == 0) {
        posh_msg(msg, msglen, "empty document");
        return POSH_ERR_JSON;
    }
    if (len > INT_MAX) { /* json-c takes an int length */
        posh_msg(msg, msglen, "document of %zu bytes is too large", len);
        return POSH_ERR_JSON;
    }
    if (!json_prescan(buf, len, &at)) {
        posh_msg(msg, msglen, "byte %zu: not allowed in strict JSON here", at);
        return POSH_ERR_JSON;
    }
    if ((tok = json_tokener_new_ex(POSH_MAX_JSON_DEPTH)) == NULL)
        return POSH_ERR_NOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, buf, (int)len);
    at = json_tokener_get_parse_end(tok);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        posh_msg(msg, msglen, "byte %zu: %s", at, tokener_error(json_tokener_get_error(tok)));
        goto done;
    }
    /*
     * json-c (strict) consumes trailing whitespace and refuses anything else, but it also stops with success
     * at a NUL, which json_prescan() refuses. Checked here again so that the rule rests on neither.
     */
    while (at < len && json_ws((unsigned char)buf[at]))
        at++;
    if (at < len) {
        posh_msg(msg, msglen, "byte %zu: data after the end of the document", at);
        goto done;
    }
    if (!json_object_is_type(obj, want)) { /* NULL, from a top-level "null", included */
        posh_msg(msg, msglen, "the document is not a JSON %s", want == json_type_array ? "array" : "object");
        goto done;
    }
    *out = obj;
    obj = NULL;
    err = POSH_OK;
done:
    json_object_put(obj);
    json_tokener_free(tok);
    return err;
}

/* json-c's name of a value's type ("int", "double", "null", ...) for messages; JSON null is a NULL object. */
const char *posh_json_type_name(json_object *v)
{
    return json_type_to_name(json_object_get_type(v));
}

static const char *type_name(json_object *v)
{
    return posh_json_type_name(v);
}

/*
 * A positive JSON integer. json-c keeps integers above INT64_MAX as uint64 (saturating beyond UINT64_MAX) and
 * json_object_get_int64() saturates them to INT64_MAX: a huge expires means "as long as allowed", which the
 * configured maximum TTL then caps.
 */
static posh_err parse_expires(json_object *top, int64_t *expires, char *msg, size_t msglen)
{
    json_object *v;
    int64_t n;

    if (!json_object_object_get_ex(top, "expires", &v)) {
        posh_msg(msg, msglen, "expires: missing");
        return POSH_ERR_EXPIRES;
    }
    if (!json_object_is_type(v, json_type_int)) {
        posh_msg(msg, msglen, "expires: expected an integer, got %s", type_name(v));
        return POSH_ERR_EXPIRES;
    }
    if ((n = json_object_get_int64(v)) <= 0) {
        posh_msg(msg, msglen, "expires: %lld is not a positive number of seconds", (long long)n);
        return POSH_ERR_EXPIRES;
    }
    *expires = n;
    return POSH_OK;
}

/* One fingerprint value: base64 of exactly the digest length of hash h, decoded into out. */
static posh_err parse_fingerprint(json_object *v, size_t i, posh_hash h, unsigned char *out, char *msg,
                                  size_t msglen)
{
    const char *name = posh_hash_name(h);
    int len;

    if (!json_object_is_type(v, json_type_string)) {
        posh_msg(msg, msglen, "fingerprints[%zu].%s: expected a string, got %s", i, name, type_name(v));
        return POSH_ERR_FINGERPRINT;
    }
    if ((len = json_object_get_string_len(v)) > POSH_MAX_HASH_STRING) {
        posh_msg(msg, msglen, "fingerprints[%zu].%s: longer than %d characters", i, name, POSH_MAX_HASH_STRING);
        return POSH_ERR_FINGERPRINT;
    }
    if (len < 0 || posh_b64_decode_exact(json_object_get_string(v), (size_t)len, out, posh_hash_len(h)) != 0) {
        posh_msg(msg, msglen, "fingerprints[%zu].%s: not base64 of a %zu-byte digest", i, name, posh_hash_len(h));
        return POSH_ERR_FINGERPRINT;
    }
    return POSH_OK;
}

/*
 * A descriptor: an object whose known hash names are decoded; other members are ignored (new hashes must not
 * break old clients). With a duplicated name json-c keeps the last value, so that is the one checked and used.
 */
static posh_err parse_descriptor(json_object *obj, size_t i, posh_descriptor *d, char *msg, size_t msglen)
{
    posh_err err;

    if (!json_object_is_type(obj, json_type_object)) {
        posh_msg(msg, msglen, "fingerprints[%zu]: expected an object, got %s", i, type_name(obj));
        return POSH_ERR_DOCUMENT;
    }
    json_object_object_foreach(obj, key, val) {
        /* json_prescan() refused escaped NULs, so strlen() is the member name's whole length. */
        int h = posh_hash_from_name(key, strlen(key));
        if (h < 0)
            continue;
        if ((err = parse_fingerprint(val, i, (posh_hash)h, d->digest[h], msg, msglen)) != POSH_OK)
            return err;
        d->present |= 1u << h;
    }
    return POSH_OK;
}

static posh_err parse_fingerprints(json_object *arr, posh_doc *doc, char *msg, size_t msglen)
{
    posh_err err;
    size_t i, n;

    if (!json_object_is_type(arr, json_type_array)) {
        posh_msg(msg, msglen, "fingerprints: expected an array, got %s", type_name(arr));
        return POSH_ERR_DOCUMENT;
    }
    if ((n = json_object_array_length(arr)) == 0 || n > POSH_MAX_DESCRIPTORS) {
        posh_msg(msg, msglen, "fingerprints: %zu descriptors, expected 1 to %d", n, POSH_MAX_DESCRIPTORS);
        return POSH_ERR_DOCUMENT;
    }
    if ((doc->descriptors = calloc(n, sizeof(*doc->descriptors))) == NULL)
        return POSH_ERR_NOMEM;
    doc->n_descriptors = n;
    for (i = 0; i < n; i++) {
        err = parse_descriptor(json_object_array_get_idx(arr, i), i, &doc->descriptors[i], msg, msglen);
        if (err != POSH_OK)
            return err;
    }
    return POSH_OK;
}

/* ---- JWK Sets (draft-miller-posh-01..03, draft-ietf-xmpp-posh-00; RFC 7517 for the members) ---- */

/* Members of private keys (RFC 7518 section 6): a document holding one is refused whole, never partly used. */
static const char *const jwk_private[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
/* Members that, when present, must be strings; the others (unknown ones) are ignored, as for descriptors. */
static const char *const jwk_strings[] = {"kty", "kid", "use", "alg", "n", "e", "crv", "x", "y", "x5u"};

/* An optional string member: absent (NULL), or its value; a non-string is POSH_ERR_DOCUMENT. */
static posh_err jwk_string(json_object *key, size_t i, const char *name, json_object **out, char *msg,
                           size_t msglen)
{
    *out = NULL;
    if (!json_object_object_get_ex(key, name, out))
        return POSH_OK;
    if (!json_object_is_type(*out, json_type_string)) {
        posh_msg(msg, msglen, "keys[%zu].%s: expected a string, got %s", i, name, type_name(*out));
        return POSH_ERR_DOCUMENT;
    }
    return POSH_OK;
}

/* A thumbprint (x5t: SHA-1, x5t#S256: SHA-256): unpadded base64url of exactly the digest (RFC 7517 4.8, 4.9). */
static posh_err jwk_thumbprint(json_object *key, size_t i, const char *name, posh_hash h, posh_descriptor *d,
                               char *msg, size_t msglen)
{
    json_object *v;
    posh_err err;
    int len;

    if ((err = jwk_string(key, i, name, &v, msg, msglen)) != POSH_OK || v == NULL)
        return err == POSH_OK ? POSH_OK : POSH_ERR_FINGERPRINT;
    len = json_object_get_string_len(v);
    if (len < 0 || len > POSH_MAX_HASH_STRING ||
        posh_b64url_decode_exact(json_object_get_string(v), (size_t)len, d->digest[h], posh_hash_len(h)) != 0) {
        posh_msg(msg, msglen, "keys[%zu].%s: not unpadded base64url of a %zu-byte %s digest", i, name,
                 posh_hash_len(h), posh_hash_name(h));
        return POSH_ERR_FINGERPRINT;
    }
    d->present |= 1u << h;
    return POSH_OK;
}

/* One x5c entry: standard base64 of one whole DER certificate of at most POSH_MAX_X5C_BYTES. */
static posh_err jwk_x5c_entry(json_object *v, size_t i, size_t j, unsigned char *der, size_t *der_len, char *msg,
                              size_t msglen)
{
    const unsigned char *p = der;
    X509 *x = NULL;
    int len;

    if (!json_object_is_type(v, json_type_string)) {
        posh_msg(msg, msglen, "keys[%zu].x5c[%zu]: expected a string, got %s", i, j, type_name(v));
        return POSH_ERR_DOCUMENT;
    }
    len = json_object_get_string_len(v);
    if (len < 0 || posh_b64_decode(json_object_get_string(v), (size_t)len, der, POSH_MAX_X5C_BYTES, der_len) != 0) {
        posh_msg(msg, msglen, "keys[%zu].x5c[%zu]: not standard base64 of at most %d bytes", i, j,
                 POSH_MAX_X5C_BYTES);
        return POSH_ERR_DOCUMENT;
    }
    /* One certificate and nothing after it: d2i_X509 must consume every byte. */
    if (*der_len == 0 || (x = d2i_X509(NULL, &p, (long)*der_len)) == NULL || p != der + *der_len) {
        X509_free(x);
        posh_msg(msg, msglen, "keys[%zu].x5c[%zu]: not a DER certificate", i, j);
        return POSH_ERR_DOCUMENT;
    }
    X509_free(x);
    return POSH_OK;
}

/*
 * x5c (RFC 7517 4.7): 1..POSH_MAX_X5C certificates, the first the one the key is about. The key vouches for a
 * leaf whose DER is exactly x5c[0]: recorded as its SHA-256 (equal digests, equal bytes). A thumbprint given
 * beside it must be that certificate's, or the key says two things and the document is refused.
 */
static posh_err jwk_x5c(json_object *key, size_t i, posh_descriptor *d, char *msg, size_t msglen)
{
    static const posh_hash hashes[] = {POSH_HASH_SHA1, POSH_HASH_SHA256};
    static const char *const names[] = {"x5t", "x5t#S256"};
    unsigned char *der = NULL, md[POSH_HASH_MAX_LEN];
    size_t n, der_len = 0, first_len = 0;
    posh_err err = POSH_OK;
    json_object *arr;

    if (!json_object_object_get_ex(key, "x5c", &arr))
        return POSH_OK;
    if (!json_object_is_type(arr, json_type_array)) {
        posh_msg(msg, msglen, "keys[%zu].x5c: expected an array, got %s", i, type_name(arr));
        return POSH_ERR_DOCUMENT;
    }
    if ((n = json_object_array_length(arr)) == 0 || n > POSH_MAX_X5C) {
        posh_msg(msg, msglen, "keys[%zu].x5c: %zu certificates, expected 1 to %d", i, n, POSH_MAX_X5C);
        return POSH_ERR_DOCUMENT;
    }
    if ((der = malloc(POSH_MAX_X5C_BYTES)) == NULL)
        return POSH_ERR_NOMEM;
    for (size_t j = n; j-- > 0;) { /* the first last: der then holds x5c[0] */
        if ((err = jwk_x5c_entry(json_object_array_get_idx(arr, j), i, j, der, &der_len, msg, msglen)) != POSH_OK)
            goto done;
        first_len = der_len;
    }
    for (size_t k = 0; k < 2; k++) {
        unsigned int mdlen = 0;
        const EVP_MD *type = hashes[k] == POSH_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
        if (!EVP_Digest(der, first_len, md, &mdlen, type, NULL)) {
            err = POSH_ERR_NOMEM;
            goto done;
        }
        if ((d->present & (1u << hashes[k])) && memcmp(md, d->digest[hashes[k]], mdlen) != 0) {
            posh_msg(msg, msglen, "keys[%zu].%s: not the thumbprint of keys[%zu].x5c[0]", i, names[k], i);
            err = POSH_ERR_FINGERPRINT;
            goto done;
        }
        if (hashes[k] == POSH_HASH_SHA256) {
            memcpy(d->digest[POSH_HASH_SHA256], md, mdlen);
            d->present |= 1u << POSH_HASH_SHA256;
        }
    }
done:
    free(der);
    return err;
}

/*
 * One key. Strict: a private-key member refuses the whole document; the string members are strings; kty is
 * required (RFC 7517 4.1); key_ops, when present, is an array of strings; x5t and x5t#S256 are thumbprints;
 * x5c holds certificates; and at least one of the three says which certificate the key is about. The key's
 * public parameters (n, e, ...) are not compared with anything: as in the drafts, only the certificate counts.
 */
static posh_err parse_jwk(json_object *key, size_t i, posh_descriptor *d, char *msg, size_t msglen)
{
    json_object *v;
    posh_err err;

    if (!json_object_is_type(key, json_type_object)) {
        posh_msg(msg, msglen, "keys[%zu]: expected an object, got %s", i, type_name(key));
        return POSH_ERR_DOCUMENT;
    }
    for (size_t k = 0; k < sizeof(jwk_private) / sizeof(jwk_private[0]); k++) {
        if (json_object_object_get_ex(key, jwk_private[k], NULL)) {
            posh_msg(msg, msglen, "keys[%zu].%s: a private-key member (a POSH document must never publish a "
                     "private key)", i, jwk_private[k]);
            return POSH_ERR_DOCUMENT;
        }
    }
    for (size_t k = 0; k < sizeof(jwk_strings) / sizeof(jwk_strings[0]); k++)
        if ((err = jwk_string(key, i, jwk_strings[k], &v, msg, msglen)) != POSH_OK)
            return err;
    if (!json_object_object_get_ex(key, "kty", &v) || json_object_get_string_len(v) == 0) {
        posh_msg(msg, msglen, "keys[%zu].kty: missing or empty", i);
        return POSH_ERR_DOCUMENT;
    }
    if (json_object_object_get_ex(key, "key_ops", &v)) {
        bool ok = json_object_is_type(v, json_type_array);
        for (size_t k = 0; ok && k < json_object_array_length(v); k++)
            ok = json_object_is_type(json_object_array_get_idx(v, k), json_type_string);
        if (!ok) {
            posh_msg(msg, msglen, "keys[%zu].key_ops: expected an array of strings", i);
            return POSH_ERR_DOCUMENT;
        }
    }
    if ((err = jwk_thumbprint(key, i, "x5t", POSH_HASH_SHA1, d, msg, msglen)) != POSH_OK ||
        (err = jwk_thumbprint(key, i, "x5t#S256", POSH_HASH_SHA256, d, msg, msglen)) != POSH_OK ||
        (err = jwk_x5c(key, i, d, msg, msglen)) != POSH_OK)
        return err;
    if (d->present == 0) {
        posh_msg(msg, msglen, "keys[%zu]: none of x5t, x5t#S256 and x5c says which certificate it is", i);
        return POSH_ERR_DOCUMENT;
    }
    return POSH_OK;
}

static posh_err parse_keys(json_object *arr, posh_doc *doc, char *msg, size_t msglen)
{
    posh_err err;
    size_t i, n;

    if (!json_object_is_type(arr, json_type_array)) {
        posh_msg(msg, msglen, "keys: expected an array, got %s", type_name(arr));
        return POSH_ERR_DOCUMENT;
    }
    if ((n = json_object_array_length(arr)) == 0 || n > POSH_MAX_DESCRIPTORS) {
        posh_msg(msg, msglen, "keys: %zu keys, expected 1 to %d", n, POSH_MAX_DESCRIPTORS);
        return POSH_ERR_DOCUMENT;
    }
    if ((doc->descriptors = calloc(n, sizeof(*doc->descriptors))) == NULL)
        return POSH_ERR_NOMEM;
    doc->n_descriptors = n;
    for (i = 0; i < n; i++)
        if ((err = parse_jwk(json_object_array_get_idx(arr, i), i, &doc->descriptors[i], msg, msglen)) != POSH_OK)
            return err;
    return POSH_OK;
}

static posh_err parse_url(json_object *v, posh_doc *doc, char *msg, size_t msglen)
{
    const char *s;
    int len;

    if (!json_object_is_type(v, json_type_string)) {
        posh_msg(msg, msglen, "url: expected a string, got %s", type_name(v));
        return POSH_ERR_REFERENCE_URL;
    }
    s = json_object_get_string(v);
    if ((len = json_object_get_string_len(v)) > POSH_MAX_URL_LEN) {
        posh_msg(msg, msglen, "url: longer than %d characters", POSH_MAX_URL_LEN);
        return POSH_ERR_REFERENCE_URL;
    }
    if (len < 0 || !posh_url_is_https(s, (size_t)len)) {
        posh_msg(msg, msglen, "url: not an https:// URL with a host, without userinfo, spaces or controls");
        return POSH_ERR_REFERENCE_URL;
    }
    if ((doc->url = strndup(s, (size_t)len)) == NULL)
        return POSH_ERR_NOMEM;
    return POSH_OK;
}

/*
 * Checks go from the outside in: JSON, then which kind of document (fingerprints, keys or url: exactly one, and
 * a form the caller accepts), then expires, then the kind's own member. The first failure is the one reported.
 */
posh_err posh_doc_parse_formats(const char *buf, size_t len, unsigned formats, posh_doc *doc, char *msg,
                                size_t msglen)
{
    posh_doc tmp = {0};
    json_object *top = NULL, *fingerprints = NULL, *keys = NULL, *url = NULL;
    bool has_fingerprints, has_keys, has_url;
    posh_err err;

    posh_msg(msg, msglen, "%s", "");
    if (doc == NULL || (buf == NULL && len > 0))
        return POSH_ERR_INVALID_ARGUMENT;
    memset(doc, 0, sizeof(*doc));
    if ((err = posh_json_parse(buf, len, json_type_object, &top, msg, msglen)) != POSH_OK)
        goto done;
    /* A member whose value is null is present (and then fails its type check). */
    has_fingerprints = json_object_object_get_ex(top, "fingerprints", &fingerprints);
    has_keys = json_object_object_get_ex(top, "keys", &keys);
    has_url = json_object_object_get_ex(top, "url", &url);
    err = POSH_ERR_DOCUMENT;
    if (has_fingerprints + has_keys + has_url != 1) {
        posh_msg(msg, msglen, "%s", has_fingerprints + has_keys + has_url == 0
                                        ? "none of fingerprints, keys and url"
                                        : "more than one of fingerprints, keys and url: a document is one of a "
                                          "fingerprints document, a JWK Set and a reference");
        goto done;
    }
    if ((has_fingerprints && !(formats & POSH_FORMAT_FINGERPRINTS)) || (has_keys && !(formats & POSH_FORMAT_JWK))) {
        posh_msg(msg, msglen, "a %s, a form this client does not accept (POSH_FORMATS)",
                 has_keys ? "JWK Set (keys)" : "fingerprints document");
        goto done;
    }
    if ((err = parse_expires(top, &tmp.expires, msg, msglen)) != POSH_OK)
        goto done;
    if (has_url) {
        tmp.kind = POSH_DOC_REFERENCE;
        err = parse_url(url, &tmp, msg, msglen);
    } else if (has_keys) {
        tmp.kind = POSH_DOC_FINGERPRINTS;
        tmp.format = POSH_FORMAT_JWK;
        err = parse_keys(keys, &tmp, msg, msglen);
    } else {
        tmp.kind = POSH_DOC_FINGERPRINTS;
        tmp.format = POSH_FORMAT_FINGERPRINTS;
        err = parse_fingerprints(fingerprints, &tmp, msg, msglen);
    }
    if (err == POSH_OK) {
        *doc = tmp;
        memset(&tmp, 0, sizeof(tmp));
    }
done:
    if (err == POSH_ERR_NOMEM)
        posh_msg(msg, msglen, "out of memory");
    posh_doc_clear(&tmp);
    json_object_put(top);
    return err;
}

posh_err posh_doc_parse(const char *buf, size_t len, posh_doc *doc, char *msg, size_t msglen)
{
    return posh_doc_parse_formats(buf, len, POSH_FORMAT_ALL, doc, msg, msglen);
}

void posh_doc_clear(posh_doc *doc)
{
    if (doc == NULL)
        return;
    free(doc->descriptors);
    free(doc->url);
    memset(doc, 0, sizeof(*doc));
}
