/*
 * posh_internal.h - interfaces between libposh's files. Not installed; tests and fuzz targets link the static
 * library and may use these. Hidden visibility keeps every name here out of the shared library's exports.
 */
#ifndef POSH_INTERNAL_H
#define POSH_INTERNAL_H

#include "posh.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>

/* ---- hard limits on what comes from the network (documented in README "Limits") ---- */
#define POSH_MAX_DOMAIN_LEN 253
#define POSH_MAX_SERVICE_LEN 63
#define POSH_MAX_URL_LEN 2048
#define POSH_MAX_JSON_DEPTH 8         /* a document needs 3: object > array > object */
#define POSH_MAX_DESCRIPTORS 64      /* fingerprint descriptors, or keys of a JWK Set */
#define POSH_MAX_X5C 10              /* certificates in a JWK's x5c */
#define POSH_MAX_X5C_BYTES 16384     /* each, DER */
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
/* The same decoding rules for a value of any length up to cap bytes: *out_len gets its length. 0 or -1. */
int posh_b64_decode(const char *in, size_t in_len, unsigned char *out, size_t cap, size_t *out_len);
/*
 * base64url as JOSE uses it (RFC 7515 section 2: the '-' '_' alphabet, no padding, unused bits zero) into exactly
 * want bytes. No '=', no standard-alphabet '+' or '/'. 0 or -1.
 */
int posh_b64url_decode_exact(const char *in, size_t in_len, unsigned char *out, size_t want);
/* Encode as unpadded base64url (same buffer size as posh_b64_encode). Returns chars written. */
size_t posh_b64url_encode(const unsigned char *in, size_t len, char *out, size_t outlen);

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
/* A parsed service ("_xmpp-server._tcp") is XMPP's: RFC 7712's stream header names its reference identifier. */
int posh_service_is_xmpp(const char *service);
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
    unsigned format;                /* POSH_DOC_FINGERPRINTS: POSH_FORMAT_FINGERPRINTS or POSH_FORMAT_JWK */
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

/*
 * Strict JSON (doc.c): the bytes as exactly one value of type want (json_type_object, json_type_array), within
 * POSH_MAX_JSON_DEPTH, nothing but whitespace after it; what json-c lets through and JSON does not is refused
 * first. POSH_ERR_JSON with a message naming the byte; *out to release with json_object_put().
 */
posh_err posh_json_parse(const char *buf, size_t len, json_type want, json_object **out, char *msg, size_t msglen);
/* json-c's name of a value's type, for messages ("int", "null", ...). */
const char *posh_json_type_name(json_object *v);

/* ---- Secure Service Delegation documents (delegation.c): pure, bounded, fuzzed ---- */
#define POSH_MAX_DELEGATIONS 32
typedef struct posh_delegation {
    char host[POSH_MAX_DOMAIN_LEN + 2];   /* where the service runs (normalised DNS name) */
    int port;                             /* 1..65535 */
    char domain[POSH_MAX_DOMAIN_LEN + 2]; /* the name its certificate carries (normalised DNS name) */
} posh_delegation;

typedef struct posh_delegation_doc {
    size_t n;                             /* 1..POSH_MAX_DELEGATIONS */
    posh_delegation *entries;             /* malloc'd */
} posh_delegation_doc;

/*
 * Parse a delegation document from exactly len bytes: a JSON array of 1..POSH_MAX_DELEGATIONS objects, each
 * with "host" and "domain" (strings, DNS names as posh_domain_normalize() accepts them: never an address) and
 * "port" (integer 1..65535); other members are ignored. POSH_OK and *doc (posh_delegation_clear), or
 * POSH_ERR_JSON / POSH_ERR_DOCUMENT / POSH_ERR_NOMEM with a message naming the entry and member.
 */
posh_err posh_delegation_parse(const char *buf, size_t len, posh_delegation_doc *doc, char *msg, size_t msglen);
void posh_delegation_clear(posh_delegation_doc *doc);
/*
 * The same, accepting only the forms in formats (POSH_FORMAT_*; references always): another form is
 * POSH_ERR_DOCUMENT. A JWK Set's keys become descriptors: x5t a SHA-1 digest, x5t#S256 a SHA-256 digest, x5c[0]
 * the SHA-256 of that certificate (it must agree with the thumbprints given beside it).
 */
posh_err posh_doc_parse_formats(const char *buf, size_t len, unsigned formats, posh_doc *doc, char *msg,
                                size_t msglen);
void posh_doc_clear(posh_doc *doc);

/* ---- the persistent cache directory (store_entry.c: pure, fuzzed; store_dir.c: the file system) ---- */
/*
 * One entry file, all integers big-endian, nothing between or after the fields:
 *   "POSHSTOR" (8 bytes)  u32 version (1)
 *   i64 fetched          wall-clock seconds when the lookup of the source document began (> 0)
 *   i64 target_fetched   wall-clock seconds when the reference target's fetch began (> 0), 0 without one
 *   str domain           normalised source domain (str = u32 length + bytes, no NUL inside)
 *   str service          "_svc._proto"
 *   str source_url       the URL the source document came from (after redirects); https
 *   u32 source_status    its HTTP status, 200..299
 *   str source_doc       the source document's bytes as fetched
 *   str target_url       the URL the target document came from; "" without a reference
 *   u32 target_status    200..299, 0 without a reference
 *   str target_doc       the target document's bytes as fetched; "" without a reference
 *   SHA-256 (32 bytes)   of every byte before it
 * The parse is strict and canonical: an accepted entry serialises back to exactly its bytes.
 */
#define POSH_STORE_MAGIC "POSHSTOR"
#define POSH_STORE_VERSION 1u
#define POSH_STORE_MAX_DOC 1048576                  /* the highest POSH_MAX_BYTES */
#define POSH_STORE_SERVICE_LEN (2 * POSH_MAX_SERVICE_LEN + 3)
#define POSH_STORE_MAX_ENTRY                                                                                   \
    (8 + 4 + 8 + 8 + 6 * 4 + 2 * 4 + 32 + POSH_MAX_DOMAIN_LEN + POSH_STORE_SERVICE_LEN + 2 * POSH_MAX_URL_LEN +   \
     2 * POSH_STORE_MAX_DOC)
#define POSH_STORE_NAME_LEN 69                      /* 64 hex digits of SHA-256("domain service") + ".posh" */

typedef struct posh_store_entry {
    int64_t fetched;
    int64_t target_fetched;
    char domain[POSH_MAX_DOMAIN_LEN + 1];
    char service[POSH_STORE_SERVICE_LEN + 1];
    char source_url[POSH_MAX_URL_LEN + 1];
    uint32_t source_status;
    const char *source_doc;           /* parse: borrowed from the buffer parsed */
    size_t source_doc_len;
    char target_url[POSH_MAX_URL_LEN + 1];
    uint32_t target_status;
    const char *target_doc;
    size_t target_doc_len;
    /* Filled by posh_store_entry_parse only: the documents parsed (release with posh_store_entry_clear). */
    posh_doc source;
    posh_doc target;
} posh_store_entry;

/*
 * Parse an entry from exactly len bytes. POSH_OK: *e is filled, its documents re-parsed with posh_doc_parse
 * (the source's a fingerprints document, or a reference whose target is a fingerprints document), every
 * string checked (the domain normalised, the service in its SRV form, the URLs https). Otherwise an error
 * (POSH_ERR_DOCUMENT for the format, the document parser's own for a document, POSH_ERR_NOMEM), *e empty,
 * and a message in msg. Pure: no I/O, no clock.
 */
posh_err posh_store_entry_parse(const unsigned char *buf, size_t len, posh_store_entry *e, char *msg,
                                size_t msglen);
void posh_store_entry_clear(posh_store_entry *e);
/* The bytes of e (its parsed documents are not read): malloc'd into *out. POSH_ERR_INVALID_ARGUMENT if a field
 * is over its limit, POSH_ERR_NOMEM. */
posh_err posh_store_entry_serialize(const posh_store_entry *e, unsigned char **out, size_t *outlen);
/*
 * The file name of (domain, service) under a fetch configuration (scope: the SHA-256 posh_store_scope() makes
 * of the trust anchors' content, connect-to list, layouts and redirect limit): hex SHA-256 of
 * "domain service\n" and the scope's 32 bytes, + ".posh"; out has NAME_LEN + 1 bytes. Clients that would fetch
 * differently never read each other's entries.
 */
void posh_store_entry_name(const char *domain, const char *service, const unsigned char scope[32], char *out);
/* Is name what posh_store_entry_name makes (64 lower-case hex digits and ".posh")? */
int posh_store_name_is_entry(const char *name);

/*
 * Open path as a cache directory: O_DIRECTORY | O_NOFOLLOW (a symbolic link is refused, not followed), then
 * fstat on what was opened: a directory owned by the effective user, not writable by group or others. With
 * create, a missing directory is made first (mode 0700, the last component only). Returns the descriptor
 * (O_CLOEXEC), or -1 with the reason in why.
 */
int posh_store_dir_open(const char *path, int create, char *why, size_t whylen);
/*
 * Read entry name under dirfd (openat, O_NOFOLLOW | O_NONBLOCK): only a regular file owned by the effective
 * user, with one link, not writable by group or others, of at most cap bytes (at most cap + 1 are read).
 * 1: *buf (malloc'd) and *len; 0: there is no such file; -1: refused or unreadable (why says which).
 */
int posh_store_read(int dirfd, const char *name, size_t cap, unsigned char **buf, size_t *len, char *why,
                    size_t whylen);
/* Write buf as name under dirfd atomically: a new temporary file (mode 0600) in the directory, then renameat.
 * 0 ok, -1 (why says why; no temporary file left behind). */
int posh_store_write(int dirfd, const char *name, const unsigned char *buf, size_t len, char *why, size_t whylen);
/* The same with the entry's mode: 0600 (written, not used since), or 0400 (an entry in use, rewritten). */
int posh_store_write_mode(int dirfd, const char *name, const unsigned char *buf, size_t len, mode_t mode, char *why,
                          size_t whylen);
/*
 * An entry's mode is its use: 0600 when written and not read back since, 0400 once a load found it sound and
 * fresh (it then survives a burst of entries nobody used again). in_use: is name such an entry of ours?
 * mark_used: make it one (opened with O_NOFOLLOW; only a regular file of ours with one link), and set its
 * modification time to now: the trim's recency is the last write or use.
 */
int posh_store_in_use(int dirfd, const char *name);
void posh_store_mark_used(int dirfd, const char *name);
/* How far posh_store_trim goes: past either high-water mark it removes down to both low-water marks. */
typedef struct posh_store_limits {
    size_t high_entries, low_entries;
    uint64_t high_bytes, low_bytes;
    time_t now;                 /* wall clock */
    long max_age;               /* an entry untouched this long is surely expired (removed whatever the marks); 0 */
} posh_store_limits;
/*
 * Bound the directory (one readdir and an fstatat per name): entries surely expired go; then, past a high-water
 * mark, the entries not used since written (oldest first; with them the least recently used of the entries in
 * use past 3/4 of the low-water mark), then those in use (least recently used first), until both low-water
 * marks hold. Temporary files older than 60 s (a writer that died) go too. Returns the number of
 * entries left, their bytes in *bytes_left (may be NULL).
 */
size_t posh_store_trim(int dirfd, const posh_store_limits *lim, uint64_t *bytes_left);

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
 * 1 when certificates a and b have the same DER, decided without encoding either; 0 when they differ, or when
 * that is not known so (an unusual signature algorithm parameter): the caller then compares encodings.
 * A certificate's DER is the SEQUENCE of its to-be-signed part, its signature algorithm and its signature value.
 * OpenSSL 3 keeps the to-be-signed part as the bytes it parsed, and X509_cmp() compares the SHA-1 of the whole DER
 * (cached with the extensions, which a chain's verification computes anyway) and then those bytes in full; the
 * algorithm and the value are compared here. Only for certificates whose kept bytes nobody rewrote (X509_cmp()
 * falls back to the SHA-1 alone for a certificate changed with X509_set_*): a peer's certificate during its
 * handshake, a copy parsed from DER.
 */
int posh_cert_same_der(const X509 *a, const X509 *b);

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
