/*
 * fuzz_delegation.c - posh_delegation_parse (a Secure Service Delegation document) on arbitrary bytes, against a
 * model written here from the rules:
 *   - success only for one strict RFC 8259 array within the depth limit (fuzz_check.h's own validator);
 *   - for a strict array that json-c reads, the model predicts the verdict from the rules (1..32 entries, each an
 *     object with "host" and "domain" strings that are DNS names and "port" an integer 1..65535, checked in that
 *     order, the first fault reported): the same error, a message naming the same entry and member, or the same
 *     entries, normalised;
 *   - a document giving one member name twice in an object is refused as JSON (checked apart from the library);
 *   - every accepted name is lower-case LDH, 1..253 characters in labels of 1..63, no trailing dot, normalises to
 *     itself and is no IPv4 address to inet_aton(); every port is 1..65535;
 *   - on error an empty document and a message; the same answer twice, also into a short or absent message buffer.
 */
#include "fuzz_check.h"

#include <arpa/inet.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Exactly one JSON array, whitespace around it, no value deeper than the limit. */
static int strict_array(const uint8_t *data, size_t size)
{
    fuzz_json j = {data, size, 0, POSH_MAX_JSON_DEPTH};
    fuzz_json_ws(&j);
    if (j.i >= j.n || j.p[j.i] != '[' || !fuzz_json_value(&j, 1))
        return 0;
    fuzz_json_ws(&j);
    return j.i == j.n;
}

/*
 * Does some object of this strict JSON text give a member name twice (compared decoded, so "host" and "h\u006fst"
 * are one name)? Written apart from the library's check (which compares json-c's member counts with the text's):
 * here each member name token is decoded by json-c on its own and compared with the earlier names of its object.
 */
static int has_duplicate_name(const uint8_t *data, size_t size)
{
    enum { MAX_NAMES = 4096 };
    static size_t owner[MAX_NAMES];
    static char *names[MAX_NAMES];
    size_t stack[POSH_MAX_JSON_DEPTH + 2], depth = 0, objects = 0, n = 0;
    int is_object[POSH_MAX_JSON_DEPTH + 2], dup = 0;

    for (size_t i = 0; i < size && !dup; i++) {
        unsigned char c = data[i];
        if (c == '"') {
            size_t start = i, k;
            for (i++; i < size && data[i] != '"'; i++)
                if (data[i] == '\\')
                    i++;
            /* A member name: the string is followed (after whitespace) by ':'. */
            for (k = i + 1; k < size && strchr(" \t\r\n", data[k]) != NULL; k++)
                ;
            if (k < size && data[k] == ':' && depth > 0 && is_object[depth - 1] && n < MAX_NAMES) {
                char *tok = strndup((const char *)data + start, i + 1 - start);
                json_object *v = tok != NULL ? json_tokener_parse(tok) : NULL;
                const char *name = v != NULL ? json_object_get_string(v) : NULL;
                size_t len = v != NULL ? (size_t)json_object_get_string_len(v) : 0;
                for (size_t j = 0; name != NULL && j < n; j++)
                    if (owner[j] == stack[depth - 1] && strlen(names[j]) == len && memcmp(names[j], name, len) == 0)
                        dup = 1;
                owner[n] = stack[depth - 1];
                names[n++] = name != NULL ? strndup(name, len) : strdup("");
                json_object_put(v);
                free(tok);
            }
        } else if ((c == '{' || c == '[') && depth < sizeof(stack) / sizeof(stack[0])) {
            is_object[depth] = c == '{';
            stack[depth++] = objects++;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    for (size_t j = 0; j < n; j++)
        free(names[j]);
    return dup;
}

/* What an accepted name must look like, whatever the input. */
static void check_name(const uint8_t *data, size_t size, const char *what, size_t i, const char *name)
{
    size_t len = strnlen(name, POSH_MAX_DOMAIN_LEN + 2), label = 0;
    char again[POSH_MAX_DOMAIN_LEN + 2];
    struct in_addr a;

    FUZZ_ASSERT_IN(data, size, len >= 1 && len <= POSH_MAX_DOMAIN_LEN, "[%zu].%s of %zu characters", i, what, len);
    for (size_t k = 0; k < len; k++) {
        char c = name[k];
        FUZZ_ASSERT_IN(data, size, (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.',
                       "[%zu].%s: byte 0x%02x", i, what, (unsigned char)c);
        if (c == '.') {
            FUZZ_ASSERT_IN(data, size, label >= 1, "[%zu].%s: an empty label", i, what);
            label = 0;
        } else {
            FUZZ_ASSERT_IN(data, size, ++label <= 63, "[%zu].%s: a label over 63", i, what);
        }
    }
    FUZZ_ASSERT_IN(data, size, label >= 1, "[%zu].%s ends with a dot", i, what);
    FUZZ_ASSERT_IN(data, size, posh_domain_normalize(name, again, sizeof(again)) == POSH_OK && strcmp(again, name) == 0,
                   "[%zu].%s \"%s\" does not normalise to itself", i, what, name);
    FUZZ_ASSERT_IN(data, size, inet_aton(name, &a) == 0, "[%zu].%s \"%s\" is an IPv4 address", i, what, name);
}

/* ---- the model: what the rules say of a document json-c read ---- */

typedef struct model {
    posh_err err;
    char says[96];                            /* the message starts with this (errors) */
    size_t n;
    posh_delegation e[POSH_MAX_DELEGATIONS];  /* the entries (success) */
} model;

/* A name member: POSH_OK and out, or the fault in m. */
static int model_name(json_object *obj, size_t i, const char *member, char *out, model *m)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, member, &v)) {
        snprintf(m->says, sizeof(m->says), "[%zu].%s: missing", i, member);
        return 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(m->says, sizeof(m->says), "[%zu].%s: expected a string, got ", i, member);
        return 0;
    }
    /* A string with a NUL in it never gets here: strict JSON has no raw NUL, and POSH refuses "\u0000". */
    if (posh_domain_normalize(json_object_get_string(v), out, POSH_MAX_DOMAIN_LEN + 2) != POSH_OK) {
        snprintf(m->says, sizeof(m->says), "[%zu].%s: not a DNS name", i, member);
        return 0;
    }
    return 1;
}

static void predict(json_object *top, model *m)
{
    size_t n = json_object_array_length(top);

    m->err = POSH_ERR_DOCUMENT;
    if (n == 0 || n > POSH_MAX_DELEGATIONS) {
        snprintf(m->says, sizeof(m->says), "%zu delegations, expected 1 to %d", n, POSH_MAX_DELEGATIONS);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *obj = json_object_array_get_idx(top, i), *v;
        posh_delegation *d = &m->e[i];
        int64_t port;
        if (!json_object_is_type(obj, json_type_object)) {
            snprintf(m->says, sizeof(m->says), "[%zu]: expected an object, got ", i);
            return;
        }
        if (!model_name(obj, i, "host", d->host, m) || !model_name(obj, i, "domain", d->domain, m))
            return;
        if (!json_object_object_get_ex(obj, "port", &v)) {
            snprintf(m->says, sizeof(m->says), "[%zu].port: missing", i);
            return;
        }
        if (!json_object_is_type(v, json_type_int)) {
            snprintf(m->says, sizeof(m->says), "[%zu].port: expected an integer, got ", i);
            return;
        }
        port = json_object_get_int64(v);
        if (port < 1 || port > 65535) {
            snprintf(m->says, sizeof(m->says), "[%zu].port: %lld is not a port (1..65535)", i, (long long)port);
            return;
        }
        d->port = (int)port;
    }
    m->n = n;
    m->err = POSH_OK;
    m->says[0] = '\0';
}

/* json-c's own reading of the bytes (strict, the same depth), or NULL. */
static json_object *jsonc_read(const uint8_t *data, size_t size)
{
    json_tokener *tok = json_tokener_new_ex(POSH_MAX_JSON_DEPTH);
    json_object *obj;
    if (tok == NULL)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    if (json_tokener_get_error(tok) != json_tokener_success || !json_object_is_type(obj, json_type_array)) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

static void check_against_model(const uint8_t *data, size_t size, posh_err err, const posh_delegation_doc *doc,
                                 const char *msg)
{
    static model m;
    json_object *top;

    if (size > 65536 || !strict_array(data, size) || (top = jsonc_read(data, size)) == NULL)
        return;
    memset(&m, 0, sizeof(m));
    predict(top, &m);
    json_object_put(top);
    if (has_duplicate_name(data, size)) { /* a name given twice in one object: refused as JSON, first of all */
        m.err = POSH_ERR_JSON;
        snprintf(m.says, sizeof(m.says), "byte ");
    }
    FUZZ_ASSERT_IN(data, size, err == m.err, "error %d, the model says %d (%s): %s", (int)err, (int)m.err, m.says,
                   msg);
    if (err != POSH_OK) {
        FUZZ_ASSERT_IN(data, size, strncmp(msg, m.says, strlen(m.says)) == 0, "message \"%s\", the model says \"%s\"",
                       msg, m.says);
        return;
    }
    FUZZ_ASSERT_IN(data, size, doc->n == m.n, "%zu entries, the model says %zu", doc->n, m.n);
    for (size_t i = 0; i < m.n; i++) {
        FUZZ_ASSERT_IN(data, size, strcmp(doc->entries[i].host, m.e[i].host) == 0, "[%zu].host %s, model %s", i,
                       doc->entries[i].host, m.e[i].host);
        FUZZ_ASSERT_IN(data, size, strcmp(doc->entries[i].domain, m.e[i].domain) == 0, "[%zu].domain %s, model %s",
                       i, doc->entries[i].domain, m.e[i].domain);
        FUZZ_ASSERT_IN(data, size, doc->entries[i].port == m.e[i].port, "[%zu].port %d, model %d", i,
                       doc->entries[i].port, m.e[i].port);
    }
}

static int doc_is_empty(const posh_delegation_doc *d)
{
    return d->n == 0 && d->entries == NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[POSH_MSG_LEN], *small = NULL;
    size_t small_len = size % 24; /* 0: no buffer at all */
    posh_delegation_doc doc, again;
    posh_err err, err2;

    err = posh_delegation_parse((const char *)data, size, &doc, msg, sizeof(msg));
    FUZZ_ASSERT_IN(data, size, strnlen(msg, sizeof(msg)) < sizeof(msg), "message not terminated");
    if (err != POSH_OK) {
        FUZZ_ASSERT_IN(data, size, err == POSH_ERR_JSON || err == POSH_ERR_DOCUMENT || err == POSH_ERR_NOMEM,
                       "unexpected error %d", (int)err);
        FUZZ_ASSERT_IN(data, size, doc_is_empty(&doc), "a failed parse left entries (error %d)", (int)err);
        FUZZ_ASSERT_IN(data, size, msg[0] != '\0', "error %d without a message", (int)err);
    } else {
        FUZZ_ASSERT_IN(data, size, msg[0] == '\0', "success with a message: %s", msg);
        FUZZ_ASSERT_IN(data, size, strict_array(data, size),
                       "accepted something that is not one strict JSON array within depth %d", POSH_MAX_JSON_DEPTH);
        FUZZ_ASSERT_IN(data, size, doc.n >= 1 && doc.n <= POSH_MAX_DELEGATIONS && doc.entries != NULL, "%zu entries",
                       doc.n);
        for (size_t i = 0; i < doc.n; i++) {
            check_name(data, size, "host", i, doc.entries[i].host);
            check_name(data, size, "domain", i, doc.entries[i].domain);
            FUZZ_ASSERT_IN(data, size, doc.entries[i].port >= 1 && doc.entries[i].port <= 65535, "[%zu].port %d", i,
                           doc.entries[i].port);
        }
    }
    check_against_model(data, size, err, &doc, msg);

    /* No state carried from the first call; a short message buffer is truncated, never overrun. */
    if (small_len > 0 && (small = malloc(small_len)) == NULL)
        abort();
    memset(&again, 0x5a, sizeof(again)); /* garbage in: the parser must not read *doc before writing it */
    err2 = posh_delegation_parse((const char *)data, size, &again, small, small_len);
    FUZZ_ASSERT(err2 == err, "error %d then %d for the same bytes", (int)err, (int)err2);
    FUZZ_ASSERT(again.n == doc.n, "two parses of the same bytes differ");
    for (size_t i = 0; i < doc.n; i++)
        FUZZ_ASSERT(strcmp(again.entries[i].host, doc.entries[i].host) == 0 &&
                        strcmp(again.entries[i].domain, doc.entries[i].domain) == 0 &&
                        again.entries[i].port == doc.entries[i].port,
                    "entry %zu differs between two parses", i);
    if (small != NULL) {
        FUZZ_ASSERT(strnlen(small, small_len) < small_len, "short message buffer not terminated");
        FUZZ_ASSERT(strncmp(small, msg, strlen(small)) == 0, "short message \"%s\" is not a prefix of \"%s\"", small,
                    msg);
    }
    free(small);
    posh_delegation_clear(&again);
    posh_delegation_clear(&doc);
    FUZZ_ASSERT(doc_is_empty(&doc), "posh_delegation_clear left data");
    return 0;
}
