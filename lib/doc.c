/*
 * doc.c - parse a POSH document (fingerprints or reference) from bytes: strict JSON through json-c within
 * fixed limits, then every member type-checked. Pure: no I/O, no globals, no clock.
 */
#include "posh_internal.h"

#include <limits.h>
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

/* The bytes as exactly one JSON object, within POSH_MAX_JSON_DEPTH, with only whitespace after it. */
static posh_err json_parse_object(const char *buf, size_t len, json_object **out, char *msg, size_t msglen)
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
    if (!json_object_is_type(obj, json_type_object)) { /* NULL, from a top-level "null", included */
        posh_msg(msg, msglen, "the document is not a JSON object");
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
static const char *type_name(json_object *v)
{
    return json_type_to_name(json_object_get_type(v));
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
 * Checks go from the outside in: JSON, then which kind of document (fingerprints or url, exactly one), then
 * expires, then the kind's own member. The first failure is the one reported.
 */
posh_err posh_doc_parse(const char *buf, size_t len, posh_doc *doc, char *msg, size_t msglen)
{
    posh_doc tmp = {0};
    json_object *top = NULL, *fingerprints = NULL, *url = NULL;
    bool has_fingerprints, has_url;
    posh_err err;

    posh_msg(msg, msglen, "%s", "");
    if (doc == NULL || (buf == NULL && len > 0))
        return POSH_ERR_INVALID_ARGUMENT;
    memset(doc, 0, sizeof(*doc));
    if ((err = json_parse_object(buf, len, &top, msg, msglen)) != POSH_OK)
        goto done;
    has_fingerprints = json_object_object_get_ex(top, "fingerprints", &fingerprints);
    has_url = json_object_object_get_ex(top, "url", &url);
    if (has_fingerprints == has_url) {
        posh_msg(msg, msglen, "%s", has_url ? "both fingerprints and url: a document is one or the other"
                                            : "neither fingerprints nor url");
        err = POSH_ERR_DOCUMENT;
        goto done;
    }
    if ((err = parse_expires(top, &tmp.expires, msg, msglen)) != POSH_OK)
        goto done;
    if (has_url) {
        tmp.kind = POSH_DOC_REFERENCE;
        err = parse_url(url, &tmp, msg, msglen);
    } else {
        tmp.kind = POSH_DOC_FINGERPRINTS;
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

void posh_doc_clear(posh_doc *doc)
{
    if (doc == NULL)
        return;
    free(doc->descriptors);
    free(doc->url);
    memset(doc, 0, sizeof(*doc));
}
