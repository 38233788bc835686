/*
 * posh_internal.h - interfaces between libposh's files. Not installed; tests and fuzz targets link the static
 * library and may use these. Hidden visibility keeps every name here out of the shared library's exports.
 */
#ifndef POSH_INTERNAL_H
#define POSH_INTERNAL_H

#include "posh.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>

/* ---- hard limits on what comes from the network (documented in README "Limits") ---- */
#define POSH_MAX_DOMAIN_LEN 253
#define POSH_MAX_SERVICE_LEN 63
#define POSH_MAX_URL_LEN 2048
#define POSH_MAX_JSON_DEPTH 8         /* a document needs 3: object > array > object */
#define POSH_MAX_DESCRIPTORS 64
#define POSH_MAX_HASH_STRING 128      /* longest base64 value looked at (SHA-512 needs 88) */
#define POSH_MAX_REQUESTS 33          /* requests per lookup: 2 layouts + reference, each 1 + 10 redirects */
#define POSH_MSG_LEN 512

/* ---- hashes ---- */
typedef enum posh_hash {
    POSH_HASH_SHA1 = 0,
    POSH_HASH_SHA224,
    POSH_HASH_SHA256,
    POSH_HASH_SHA384,
    POSH_HASH_SHA512,
    POSH_HASH_COUNT
} posh_hash;

#define POSH_HASH_MAX_LEN 64

/* "sha-256" -> POSH_HASH_SHA256; name is not NUL-terminated. -1 for an unknown name. */
int posh_hash_from_name(const char *name, size_t len);
const char *posh_hash_name(posh_hash h);
size_t posh_hash_len(posh_hash h);

/*
 * Decode standard base64 (RFC 4648 section 4, '+' '/', padding optional but if present it must be correct)
 * into exactly want bytes. No whitespace, no URL-safe alphabet, non-zero padding bits rejected.
 * Returns 0 on success, -1 if malformed or the decoded length is not want.
 */
int posh_b64_decode_exact(const char *in, size_t in_len, unsigned char *out, size_t want);
/* Encode len bytes as padded standard base64 into out (needs 4*((len+2)/3)+1 bytes). Returns chars written. */
size_t posh_b64_encode(const unsigned char *in, size_t len, char *out, size_t outlen);

/* ---- names and URLs ---- */
/*
 * Validate and normalise a source domain: LDH labels of 1..63, total <= 253, no IP literal, no port, no
 * path; lower-cased, one trailing dot removed. No IPv4 address in any spelling either: the last label is
 * neither all digits nor a hex number "0x[0-9a-f]*" (any case), and inet_aton() must not accept the name
 * ("127.1", "2130706433", "0177.0.0.1", "0x7f000001", "foo.0x7f" are refused; "123.example", "0x.example",
 * "example.0xg" are names). out needs POSH_MAX_DOMAIN_LEN + 2 bytes.
 * Returns POSH_OK or POSH_ERR_BAD_DOMAIN (POSH_ERR_INVALID_ARGUMENT if out is NULL or too small).
 */
posh_err posh_domain_normalize(const char *in, char *out, size_t outlen);
/*
 * Validate and normalise a service: "[a-z0-9-]{1,63}" (upper case folded), or the SRV form "_svc._proto"
 * with svc as before and proto in [a-z0-9-]{1,63}. Writes the bare service into svc and the proto ("tcp" when
 * the bare form is given) into proto, each POSH_MAX_SERVICE_LEN + 1 bytes.
 * Returns POSH_OK or POSH_ERR_BAD_SERVICE (POSH_ERR_INVALID_ARGUMENT if svc or proto is NULL).
 */
posh_err posh_service_parse(const char *in, char *svc, char *proto);
/*
 * Build the URL of a layout for (domain, svc, proto) into out. layout is POSH_LAYOUT_RFC7711 or
 * POSH_LAYOUT_DRAFT02. Returns POSH_OK or POSH_ERR_INVALID_ARGUMENT (too long / bad layout).
 */
posh_err posh_build_url(unsigned layout, const char *domain, const char *svc, const char *proto, char *out,
                        size_t outlen);
/*
 * Is url an acceptable https URL: scheme "https" (case-insensitive), a non-empty host, no userinfo, no
 * whitespace or control bytes, at most POSH_MAX_URL_LEN. Returns 1 or 0.
 */
int posh_url_is_https(const char *url, size_t len);

/* ---- documents (doc.c): pure, bounded, fuzzed ---- */
typedef struct posh_descriptor {
    unsigned present;                                  /* bit (1u << posh_hash) set for each hash present */
    unsigned char digest[POSH_HASH_COUNT][POSH_HASH_MAX_LEN];
} posh_descriptor;

typedef enum posh_doc_kind { POSH_DOC_FINGERPRINTS = 1, POSH_DOC_REFERENCE = 2 } posh_doc_kind;

typedef struct posh_doc {
    posh_doc_kind kind;
    int64_t expires;                /* > 0 */
    /* POSH_DOC_FINGERPRINTS */
    size_t n_descriptors;           /* >= 1 (descriptors with no known hash are kept, with present == 0) */
    posh_descriptor *descriptors;   /* malloc'd array */
    /* POSH_DOC_REFERENCE */
    char *url;                      /* malloc'd, NUL-terminated, passed posh_url_is_https() */
} posh_doc;

/*
 * Parse a POSH document from exactly len bytes (need not be NUL-terminated; embedded NULs are malformed).
 * On success returns POSH_OK and fills *doc (release with posh_doc_clear). On failure returns the error
 * (POSH_ERR_JSON, POSH_ERR_DOCUMENT, POSH_ERR_FINGERPRINT, POSH_ERR_EXPIRES, POSH_ERR_REFERENCE_URL,
 * POSH_ERR_NOMEM), leaves *doc empty and, if msg is not NULL, writes a message naming the member at fault.
 */
posh_err posh_doc_parse(const char *buf, size_t len, posh_doc *doc, char *msg, size_t msglen);
void posh_doc_clear(posh_doc *doc);

/* ---- matching (match.c) ---- */
/*
 * Which hash decides for descriptor d: the strongest present and allowed (SHA-1 only if allow_sha1).
 * -1 if none.
 */
int posh_descriptor_pick(const posh_descriptor *d, bool allow_sha1);

/* The digests of one certificate, each computed on first use, so that matching hashes once per algorithm. */
typedef struct posh_digests {
    const unsigned char *der;
    size_t der_len;
    unsigned have;                                      /* bit (1u << posh_hash) once computed */
    unsigned char digest[POSH_HASH_COUNT][POSH_HASH_MAX_LEN];
} posh_digests;

/* The digest of d->der under h, computed on first use; NULL if hashing failed. */
const unsigned char *posh_digests_get(posh_digests *d, posh_hash h);

/*
 * Match a certificate's DER against descriptors. Digests are computed lazily, at most once per algorithm.
 * Returns POSH_OK with *index = matching descriptor or -1; POSH_ERR_CERTIFICATE if hashing failed;
 * POSH_ERR_INVALID_ARGUMENT if index, der or d (with n > 0) is NULL, or der_len is 0.
 */
posh_err posh_match_descriptors(const posh_descriptor *d, size_t n, bool allow_sha1, const unsigned char *der,
                                size_t der_len, int *index);

/* ---- small string helpers ---- */
/*
 * Format a message into buf (truncated, always NUL-terminated). The bytes are copied as they are: messages
 * are working text inside the library and are escaped (posh_escape) where they leave it.
 */
void posh_msg(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Server-controlled text (a Location, a reference url, JSON member names, curl's error text) must never reach
 * a terminal or a log as control bytes. Every message leaves the library through one of three exits, and each
 * passes it through posh_escape() once: a result's message (posh_result_build, POSH_ESCAPE_RAW), a connection's
 * message (verify.c record()) and a log line (posh_log), the last two with POSH_ESCAPE_MESSAGE because they
 * embed messages escaped already, and escaping those again would double every backslash.
 */
typedef enum posh_escape_mode {
    POSH_ESCAPE_RAW = 0,     /* bytes as received: '\' also escaped, as "\\", so every "\x" is an escape */
    POSH_ESCAPE_MESSAGE = 1  /* made of escaped messages and our own words: '\' kept, the rest as RAW */
} posh_escape_mode;

/*
 * Copy src into dst, each byte outside printable ASCII 0x20..0x7e written as "\xHH" (two lower-case hex
 * digits), and with POSH_ESCAPE_RAW each '\' as "\\". Truncates between whole characters or escapes, never
 * inside one; dst is always NUL-terminated when dstlen > 0. src NULL is "". Returns the length written.
 */
size_t posh_escape(char *dst, size_t dstlen, const char *src, posh_escape_mode mode);

#endif /* POSH_INTERNAL_H */
