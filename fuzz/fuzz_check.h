/*
 * fuzz_check.h - what the fuzz targets assert, shared between them: an independent strict JSON validator
 * (RFC 8259 + RFC 3629) and the invariants of a parsed POSH document. Header-only, no state.
 */
#ifndef POSH_FUZZ_CHECK_H
#define POSH_FUZZ_CHECK_H

#include "posh_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant is a crash: libFuzzer keeps the input and the stack. */
#define FUZZ_ASSERT(cond, ...)                                                                              \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                                   \
            fputc('\n', stderr);                                                                            \
            abort();                                                                                        \
        }                                                                                                   \
    } while (0)

/* The input, escaped and cut at 4000 bytes, for the report of a broken invariant. */
static inline void fuzz_print_input(const uint8_t *data, size_t size)
{
    size_t i;

    fprintf(stderr, "input (%zu bytes): \"", size);
    for (i = 0; i < size && i < 4000; i++) {
        if (data[i] >= 0x20 && data[i] < 0x7f && data[i] != '\\' && data[i] != '"')
            fputc(data[i], stderr);
        else
            fprintf(stderr, "\\x%02x", data[i]);
    }
    fprintf(stderr, "\"%s\n", size > 4000 ? "..." : "");
}

/* FUZZ_ASSERT that also shows the input. */
#define FUZZ_ASSERT_IN(data, size, cond, ...)                                                               \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fuzz_print_input((data), (size));                                                               \
            FUZZ_ASSERT(cond, __VA_ARGS__);                                                                 \
        }                                                                                                   \
    } while (0)

/* ---- a strict JSON validator, written from RFC 8259's grammar, sharing nothing with doc.c or json-c ---- */

typedef struct fuzz_json {
    const unsigned char *p;
    size_t n, i;
    size_t max_depth; /* values on the path from the top, the innermost scalar included (as json-c counts) */
} fuzz_json;

static inline void fuzz_json_ws(fuzz_json *j)
{
    while (j->i < j->n && (j->p[j->i] == ' ' || j->p[j->i] == '\t' || j->p[j->i] == '\n' || j->p[j->i] == '\r'))
        j->i++;
}

static inline int fuzz_json_lit(fuzz_json *j, const char *lit)
{
    size_t l = strlen(lit);
    if (j->n - j->i < l || memcmp(j->p + j->i, lit, l) != 0)
        return 0;
    j->i += l;
    return 1;
}

static inline int fuzz_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One UTF-8 encoded scalar value by decoding it: shortest form, not a surrogate, at most U+10FFFF. */
static inline int fuzz_json_utf8(fuzz_json *j)
{
    unsigned char c = j->p[j->i];
    uint32_t cp, min;
    size_t k, extra;

    if (c < 0x80) {
        j->i++;
        return 1;
    }
    if ((c & 0xe0) == 0xc0) {
        extra = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        extra = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (j->n - j->i <= extra)
        return 0;
    for (k = 1; k <= extra; k++) {
        unsigned char cc = j->p[j->i + k];
        if ((cc & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    j->i += extra + 1;
    return 1;
}

/* A string; POSH's profile also refuses the escaped NUL "\u0000" (json-c would cut names there). */
static inline int fuzz_json_string(fuzz_json *j)
{
    if (j->i >= j->n || j->p[j->i] != '"')
        return 0;
    j->i++;
    while (j->i < j->n) {
        unsigned char c = j->p[j->i];
        if (c == '"') {
            j->i++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++j->i >= j->n)
                return 0;
            c = j->p[j->i];
            if (c == 'u') {
                int v = 0, k;
                if (j->n - j->i < 5)
                    return 0;
                for (k = 1; k <= 4; k++) {
                    int h = fuzz_hexval(j->p[j->i + (size_t)k]);
                    if (h < 0)
                        return 0;
                    v = v * 16 + h;
                }
                if (v == 0)
                    return 0;
                j->i += 5;
            } else if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
                       c != 't') {
                return 0;
            } else {
                j->i++;
            }
            continue;
        }
        if (!fuzz_json_utf8(j))
            return 0;
    }
    return 0;
}

static inline int fuzz_json_digits(fuzz_json *j)
{
    size_t start = j->i;
    while (j->i < j->n && j->p[j->i] >= '0' && j->p[j->i] <= '9')
        j->i++;
    return j->i > start;
}

static inline int fuzz_json_number(fuzz_json *j)
{
    if (j->i < j->n && j->p[j->i] == '-')
        j->i++;
    if (j->i < j->n && j->p[j->i] == '0')
        j->i++;
    else if (!fuzz_json_digits(j))
        return 0;
    if (j->i < j->n && j->p[j->i] == '.') {
        j->i++;
        if (!fuzz_json_digits(j))
            return 0;
    }
    if (j->i < j->n && (j->p[j->i] == 'e' || j->p[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->p[j->i] == '+' || j->p[j->i] == '-'))
            j->i++;
        if (!fuzz_json_digits(j))
            return 0;
    }
    return 1;
}

static inline int fuzz_json_value(fuzz_json *j, size_t depth);

static inline int fuzz_json_container(fuzz_json *j, size_t depth, unsigned char close, int object)
{
    j->i++;
    fuzz_json_ws(j);
    if (j->i < j->n && j->p[j->i] == close) {
        j->i++;
        return 1;
    }
    for (;;) {
        if (object) {
            if (!fuzz_json_string(j))
                return 0;
            fuzz_json_ws(j);
            if (j->i >= j->n || j->p[j->i] != ':')
                return 0;
            j->i++;
            fuzz_json_ws(j);
        }
        if (!fuzz_json_value(j, depth + 1))
            return 0;
        fuzz_json_ws(j);
        if (j->i >= j->n)
            return 0;
        if (j->p[j->i] == close) {
            j->i++;
            return 1;
        }
        if (j->p[j->i] != ',')
            return 0;
        j->i++;
        fuzz_json_ws(j);
    }
}

static inline int fuzz_json_value(fuzz_json *j, size_t depth)
{
    if (depth > j->max_depth || j->i >= j->n)
        return 0;
    switch (j->p[j->i]) {
    case '{':
        return fuzz_json_container(j, depth, '}', 1);
    case '[':
        return fuzz_json_container(j, depth, ']', 0);
    case '"':
        return fuzz_json_string(j);
    case 't':
        return fuzz_json_lit(j, "true");
    case 'f':
        return fuzz_json_lit(j, "false");
    case 'n':
        return fuzz_json_lit(j, "null");
    default:
        return fuzz_json_number(j);
    }
}

/* Exactly one JSON object, whitespace around it, no value deeper than max_depth. */
static inline int fuzz_json_is_strict_object(const uint8_t *data, size_t size, size_t max_depth)
{
    fuzz_json j = {data, size, 0, max_depth};
    fuzz_json_ws(&j);
    if (j.i >= j.n || j.p[j.i] != '{' || !fuzz_json_value(&j, 1))
        return 0;
    fuzz_json_ws(&j);
    return j.i == j.n;
}

/* ---- invariants of posh_doc_parse's result ---- */

static inline int fuzz_doc_is_empty(const posh_doc *doc)
{
    static const posh_doc empty;
    return doc->kind == empty.kind && doc->expires == 0 && doc->n_descriptors == 0 && doc->descriptors == NULL &&
           doc->url == NULL;
}

/* Everything posh_internal.h promises about a parse result, for any input. */
static inline void fuzz_check_doc(const uint8_t *data, size_t size, posh_err err, const posh_doc *doc,
                                  const char *msg, size_t msglen)
{
    size_t i;

    FUZZ_ASSERT_IN(data, size, strnlen(msg, msglen) < msglen, "message not terminated");
    if (err != POSH_OK) {
        FUZZ_ASSERT_IN(data, size, err == POSH_ERR_JSON || err == POSH_ERR_DOCUMENT || err == POSH_ERR_FINGERPRINT ||
                        err == POSH_ERR_EXPIRES || err == POSH_ERR_REFERENCE_URL || err == POSH_ERR_NOMEM,
                    "unexpected error %d", (int)err);
        FUZZ_ASSERT_IN(data, size, fuzz_doc_is_empty(doc), "a failed parse left data in the document (error %d)", (int)err);
        FUZZ_ASSERT_IN(data, size, msg[0] != '\0', "error %d without a message", (int)err);
        return;
    }
    FUZZ_ASSERT_IN(data, size, msg[0] == '\0', "success with a message: %s", msg);
    FUZZ_ASSERT_IN(data, size, fuzz_json_is_strict_object(data, size, POSH_MAX_JSON_DEPTH),
                "accepted something that is not one strict JSON object within depth %d", POSH_MAX_JSON_DEPTH);
    FUZZ_ASSERT_IN(data, size, doc->expires > 0, "expires %lld", (long long)doc->expires);
    switch (doc->kind) {
    case POSH_DOC_FINGERPRINTS:
        FUZZ_ASSERT_IN(data, size, doc->n_descriptors >= 1 && doc->n_descriptors <= POSH_MAX_DESCRIPTORS, "%zu descriptors",
                    doc->n_descriptors);
        FUZZ_ASSERT_IN(data, size, doc->descriptors != NULL && doc->url == NULL, "fingerprints document with a url");
        for (i = 0; i < doc->n_descriptors; i++)
            FUZZ_ASSERT_IN(data, size, (doc->descriptors[i].present & ~((1u << POSH_HASH_COUNT) - 1)) == 0,
                        "descriptor %zu: present bits 0x%x", i, doc->descriptors[i].present);
        break;
    case POSH_DOC_REFERENCE:
        FUZZ_ASSERT_IN(data, size, doc->url != NULL && doc->descriptors == NULL && doc->n_descriptors == 0,
                    "reference document with descriptors");
        FUZZ_ASSERT_IN(data, size, strlen(doc->url) <= POSH_MAX_URL_LEN, "url of %zu bytes", strlen(doc->url));
        FUZZ_ASSERT_IN(data, size, posh_url_is_https(doc->url, strlen(doc->url)), "url %s", doc->url);
        break;
    default:
        FUZZ_ASSERT_IN(data, size, 0, "kind %d", (int)doc->kind);
    }
}

/* Same result twice: same error, same kind, expiry, descriptors and url. */
static inline void fuzz_check_same_doc(posh_err e1, const posh_doc *a, posh_err e2, const posh_doc *b)
{
    size_t i;

    FUZZ_ASSERT(e1 == e2, "error %d then %d for the same bytes", (int)e1, (int)e2);
    FUZZ_ASSERT(a->kind == b->kind && a->expires == b->expires && a->n_descriptors == b->n_descriptors,
                "two parses of the same bytes differ");
    FUZZ_ASSERT((a->url == NULL) == (b->url == NULL) && (a->url == NULL || strcmp(a->url, b->url) == 0),
                "two parses give two urls");
    for (i = 0; i < a->n_descriptors; i++) {
        const posh_descriptor *x = &a->descriptors[i], *y = &b->descriptors[i];
        FUZZ_ASSERT(x->present == y->present, "descriptor %zu: present differs", i);
        for (int h = 0; h < POSH_HASH_COUNT; h++)
            FUZZ_ASSERT(!(x->present & (1u << h)) || memcmp(x->digest[h], y->digest[h], posh_hash_len(h)) == 0,
                        "descriptor %zu: digest %d differs", i, h);
    }
}

#endif /* POSH_FUZZ_CHECK_H */
