/*
 * cmd_generate.c - `posh generate`: the documents an operator publishes. A fingerprints document (or, for the
 * clients of the early drafts, a JWK Set) for the certificates a service presents, or a reference document
 * pointing at one.
 */
#include "cli.h"
#include "posh_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "generate"
#define DEFAULT_EXPIRES 86400L
#define MAX_EXPIRES 2147483647L
#define MAX_CERTS 64 /* the library reads at most 64 descriptors (README "Limits") */
#define MAX_CERT_FILE (1L << 20)
#define CLIENT_MAX_BYTES 65536L /* what a POSH client reads of a body by default (POSH_MAX_BYTES) */

/* What to print for each certificate. */
typedef struct gen_opts {
    int jwk;  /* a JWK Set instead of a fingerprints document */
    int sha1; /* also the SHA-1 (sha-1, or x5t) */
    int x5c;  /* JWK: the certificate itself, in x5c */
} gen_opts;

static const char generate_help[] =
    "usage: posh generate [--expires N] [--sha1] CERT.pem...\n"
    "       posh generate --jwk [--expires N] [--sha1] [--x5c] CERT.pem...\n"
    "       posh generate --url URL [--expires N]\n"
    "\n"
    "Print a POSH document to publish at https://DOMAIN/.well-known/posh/SERVICE.json.\n"
    "\n"
    "With certificates: a fingerprints document, one descriptor per file, for the first certificate in it\n"
    "(the leaf, in a chain file), read as PEM (other PEM blocks, such as a key, are skipped) or DER. Each\n"
    "descriptor has the SHA-256 of the certificate's DER, and its SHA-1 with --sha1, in standard base64 with\n"
    "padding. Several certificates are alternates: publish the next one before a roll-over.\n"
    "With --jwk: the same certificates as a JWK Set {\"keys\": [...], \"expires\": N}, the form of the drafts\n"
    "before June 2014 (draft-miller-posh-01..03, draft-ietf-xmpp-posh-00), for the clients that still read it.\n"
    "One key per certificate: kty and the public parameters of the certificate's key (RSA: n, e; EC: crv\n"
    "P-256, P-384 or P-521, x, y; OKP: crv Ed25519, Ed448, X25519 or X448, x; base64url without padding, RFC\n"
    "7518 and RFC 8037), never a private member; x5t#S256 (the base64url SHA-256 of the certificate's DER);\n"
    "with --sha1 x5t (its SHA-1: draft-miller-posh-02 and -03 clients require it); with --x5c x5c, holding\n"
    "the certificate itself (standard base64 of its DER, at most 16384 bytes; the leaf only).\n"
    "With --url: a reference document; URL must be an https:// URL (where the provider publishes the\n"
    "fingerprints document or JWK Set), with no user name and only RFC 3986 characters.\n"
    "\n"
    "  -e, --expires N   seconds the document may be cached, 1..2147483647 (default 86400: one day)\n"
    "      --sha1        add the SHA-1 fingerprint to each descriptor, or x5t to each key (for old clients)\n"
    "      --jwk         print a JWK Set instead of a fingerprints document\n"
    "      --x5c         with --jwk: add the certificate to each key (x5c)\n"
    "  -u, --url URL     print a reference document to URL instead\n"
    "  -h, --help        this text\n"
    "\n"
    "A document over 65536 bytes (the default POSH_MAX_BYTES of posh clients) is printed with a warning.\n"
    "\n"
    "Exit status: 0 printed; 1 a file cannot be read or holds no certificate, or (--jwk) its key is of a type\n"
    "a JWK cannot express or (--x5c) it is over 16384 bytes (nothing is printed); 2 usage error (bad or\n"
    "missing option value, expires not 1..2147483647, url not https, more than 64 certificates, --url\n"
    "together with certificates, --sha1, --jwk or --x5c, --x5c without --jwk).\n";

static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* The first certificate of path, PEM or DER. NULL (and the reason printed) if there is none. */
static X509 *read_certificate(const char *path)
{
    unsigned char *data = NULL;
    const unsigned char *p;
    struct stat st;
    size_t len = 0;
    int fd;
    FILE *fp = NULL;
    BIO *bio = NULL;
    X509 *x = NULL;

    /*
     * A regular file of sane size: a FIFO or a device could feed the PEM reader forever. O_NONBLOCK: opening a
     * FIFO must not wait for a writer before fstat can refuse it.
     */
    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto done;
    }
    if ((fp = fdopen(fd, "rb")) == NULL) {
        cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > MAX_CERT_FILE) {
        cli_error(CMD, "%s: not a certificate file (%s)", path,
                  !S_ISREG(st.st_mode) ? "not a regular file" : "larger than 1 MiB");
        goto done;
    }
    if ((data = malloc((size_t)st.st_size + 1)) == NULL ||
        (len = fread(data, 1, (size_t)st.st_size, fp)) != (size_t)st.st_size || ferror(fp)) {
        cli_error(CMD, "%s: cannot read", path);
        goto done;
    }
    if ((bio = BIO_new_mem_buf(data, (int)len)) != NULL)
        x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    if (x == NULL) {
        p = data;
        x = d2i_X509(NULL, &p, (long)len);
    }
    if (x == NULL)
        cli_error(CMD, "%s: no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\" or DER)", path);
    else if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        cli_error(CMD, "warning: %s: the certificate has expired; clients will reject it whatever POSH says",
                  path);
done:
    ERR_clear_error();
    BIO_free(bio);
    free(data);
    if (fp != NULL)
        fclose(fp);
    return x;
}

static json_object *descriptor_json(X509 *x, const char *path, int sha1)
{
    json_object *d = json_object_new_object();
    char b64[96];

    if (d == NULL || cli_cert_fingerprint(x, "SHA256", b64, sizeof(b64)) != 0)
        goto err;
    json_object_object_add(d, "sha-256", json_object_new_string(b64));
    if (sha1) {
        if (cli_cert_fingerprint(x, "SHA1", b64, sizeof(b64)) != 0)
            goto err;
        json_object_object_add(d, "sha-1", json_object_new_string(b64));
    }
    return d;
err:
    cli_error(CMD, "%s: cannot hash the certificate", path);
    json_object_put(d);
    return NULL;
}

/* ---- JWK Sets ---- */

/* A JSON string holding bytes as unpadded base64url (RFC 7515 section 2), or standard padded base64. */
static json_object *b64_json(const unsigned char *in, size_t len, int url)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *out = len > 0 && len < (1u << 24) ? malloc(cap) : NULL;
    json_object *s = NULL;

    if (out != NULL && (url ? posh_b64url_encode(in, len, out, cap) : posh_b64_encode(in, len, out, cap)) > 0)
        s = json_object_new_string(out);
    free(out);
    return s;
}

/* Add name: the big-endian bytes of bn, left-padded with zeros to pad bytes (0: as few as bn needs). 0 or -1. */
static int add_bn(json_object *key, const char *name, const BIGNUM *bn, int pad)
{
    int len = pad > 0 ? pad : BN_num_bytes(bn);
    unsigned char *buf = len > 0 ? malloc((size_t)len) : NULL;
    json_object *v = NULL;

    if (buf != NULL && (pad > 0 ? BN_bn2binpad(bn, buf, len) : BN_bn2bin(bn, buf)) == len)
        v = b64_json(buf, (size_t)len, 1);
    free(buf);
    if (v == NULL)
        return -1;
    json_object_object_add(key, name, v);
    return 0;
}

/* Add the BIGNUM parameters params[0..n) of pk as names[0..n) (each padded to pad bytes). 0 or -1. */
static int add_bn_params(json_object *key, EVP_PKEY *pk, const char *const *params, const char *const *names,
                         size_t n, int pad)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < n; i++) {
        BIGNUM *bn = NULL;
        rc = EVP_PKEY_get_bn_param(pk, params[i], &bn) == 1 ? add_bn(key, names[i], bn, pad) : -1;
        BN_free(bn);
    }
    return rc;
}

/*
 * kty and the public parameters of the certificate's key (RFC 7518 section 6, RFC 8037 section 2): EC
 * coordinates are the full length of the field, RSA integers as few bytes as they need. Only public
 * parameters are ever read: the certificate has no others. 0, or -1 with the reason printed.
 */
static int add_public_key(json_object *key, X509 *x, const char *path)
{
    static const struct {
        int nid;
        const char *crv;
        int len; /* bytes of a coordinate */
    } curves[] = {{NID_X9_62_prime256v1, "P-256", 32}, {NID_secp384r1, "P-384", 48}, {NID_secp521r1, "P-521", 66}};
    static const char *const okp[] = {"Ed25519", "Ed448", "X25519", "X448"};
    static const char *const rsa_params[] = {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E};
    static const char *const rsa_names[] = {"n", "e"};
    static const char *const ec_params[] = {OSSL_PKEY_PARAM_EC_PUB_X, OSSL_PKEY_PARAM_EC_PUB_Y};
    static const char *const ec_names[] = {"x", "y"};
    EVP_PKEY *pk = X509_get0_pubkey(x);
    char group[64] = "";
    const char *type;

    if (pk == NULL) {
        cli_error(CMD, "%s: cannot read the certificate's public key", path);
        return -1;
    }
    type = EVP_PKEY_get0_type_name(pk);
    if (EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_is_a(pk, "RSA-PSS")) {
        json_object_object_add(key, "kty", json_object_new_string("RSA"));
        if (add_bn_params(key, pk, rsa_params, rsa_names, 2, 0) == 0)
            return 0;
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        int nid = EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) == 1
                      ? OBJ_txt2nid(group)
                      : NID_undef;
        for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++) {
            if (curves[i].nid != nid)
                continue;
            json_object_object_add(key, "kty", json_object_new_string("EC"));
            json_object_object_add(key, "crv", json_object_new_string(curves[i].crv));
            if (add_bn_params(key, pk, ec_params, ec_names, 2, curves[i].len) == 0)
                return 0;
            goto err;
        }
        cli_error(CMD, "%s: an EC key on curve %s, which a JWK cannot express (P-256, P-384, P-521)", path,
                  group[0] != '\0' ? group : "(unknown)");
        return -1;
    } else {
        for (size_t i = 0; i < sizeof(okp) / sizeof(okp[0]); i++) {
            unsigned char raw[64];
            size_t len = sizeof(raw);
            json_object *v;
            if (!EVP_PKEY_is_a(pk, okp[i]))
                continue;
            if (EVP_PKEY_get_raw_public_key(pk, raw, &len) != 1 || (v = b64_json(raw, len, 1)) == NULL)
                goto err;
            json_object_object_add(key, "kty", json_object_new_string("OKP"));
            json_object_object_add(key, "crv", json_object_new_string(okp[i]));
            json_object_object_add(key, "x", v);
            return 0;
        }
        cli_error(CMD, "%s: a %s key, which a JWK cannot express (RSA, EC P-256/P-384/P-521, Ed25519, Ed448, "
                  "X25519, X448)", path, type != NULL ? type : "unknown");
        return -1;
    }
err:
    cli_error(CMD, "%s: cannot read the parameters of the certificate's %s key", path, type != NULL ? type : "");
    return -1;
}

/* Add name: the unpadded base64url of the certificate's digest md_name (a JWK thumbprint). 0 or -1. */
static int add_thumbprint(json_object *key, const char *name, X509 *x, const char *md_name)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD *type = EVP_MD_fetch(NULL, md_name, NULL);
    json_object *v = type != NULL && X509_digest(x, type, md, &len) == 1 ? b64_json(md, len, 1) : NULL;

    EVP_MD_free(type);
    if (v == NULL)
        return -1;
    json_object_object_add(key, name, v);
    return 0;
}

/* x5c: the certificate alone (clients compare x5c[0]; the chain would only make the document larger). 0 or -1. */
static int add_x5c(json_object *key, X509 *x, const char *path)
{
    unsigned char *der = NULL;
    int len = i2d_X509(x, &der);
    json_object *arr = NULL, *v = NULL;

    if (len > POSH_MAX_X5C_BYTES) {
        cli_error(CMD, "%s: the certificate is %d bytes; POSH clients read x5c entries of at most %d", path, len,
                  POSH_MAX_X5C_BYTES);
        OPENSSL_free(der);
        return -1;
    }
    if (len > 0 && (v = b64_json(der, (size_t)len, 0)) != NULL && (arr = json_object_new_array()) != NULL &&
        json_object_array_add(arr, v) == 0) {
        json_object_object_add(key, "x5c", arr);
        OPENSSL_free(der);
        return 0;
    }
    json_object_put(arr == NULL ? v : arr);
    OPENSSL_free(der);
    cli_error(CMD, "%s: cannot encode the certificate", path);
    return -1;
}

/* One JWK for x: public members only (posh_doc_parse refuses a document with a private one). */
static json_object *key_json(X509 *x, const char *path, const gen_opts *o)
{
    json_object *key = json_object_new_object();

    if (key == NULL || add_public_key(key, x, path) != 0)
        goto err;
    if (add_thumbprint(key, "x5t#S256", x, "SHA256") != 0 || (o->sha1 && add_thumbprint(key, "x5t", x, "SHA1") != 0)) {
        cli_error(CMD, "%s: cannot hash the certificate", path);
        goto err;
    }
    if (o->x5c && add_x5c(key, x, path) != 0)
        goto err;
    return key;
err:
    json_object_put(key);
    return NULL;
}

/* ---- printing ---- */

static int print_certificates(char **files, int n, long expires, const gen_opts *o)
{
    json_object *doc = json_object_new_object(), *arr = json_object_new_array();
    size_t len = 0;
    int rc = CLI_FAIL;

    if (doc == NULL || arr == NULL) {
        json_object_put(arr);
        goto done;
    }
    json_object_object_add(doc, o->jwk ? "keys" : "fingerprints", arr);
    for (int i = 0; i < n; i++) {
        X509 *x = read_certificate(files[i]);
        json_object *d = x == NULL ? NULL : o->jwk ? key_json(x, files[i], o) : descriptor_json(x, files[i], o->sha1);
        X509_free(x);
        if (d == NULL)
            goto done;
        json_object_array_add(arr, d);
    }
    json_object_object_add(doc, "expires", json_object_new_int64(expires));
    if (json_object_to_json_string_length(doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE, &len) !=
            NULL &&
        len > (size_t)CLIENT_MAX_BYTES)
        cli_error(CMD, "warning: the document is %zu bytes; POSH clients read at most %ld by default "
                  "(POSH_MAX_BYTES)%s", len, CLIENT_MAX_BYTES, o->x5c ? ": publish it without --x5c" : "");
    rc = cli_print_json(doc) == 0 ? CLI_OK : CLI_FAIL;
    doc = NULL;
    if (rc != CLI_OK)
        cli_error(CMD, "cannot write the document to stdout");
done:
    json_object_put(doc);
    return rc;
}

static int print_reference(const char *url, long expires)
{
    json_object *doc = json_object_new_object();

    if (doc == NULL)
        return CLI_FAIL;
    json_object_object_add(doc, "url", json_object_new_string(url));
    json_object_object_add(doc, "expires", json_object_new_int64(expires));
    if (cli_print_json(doc) != 0) {
        cli_error(CMD, "cannot write the document to stdout");
        return CLI_FAIL;
    }
    return CLI_OK;
}

int cmd_generate(int argc, char **argv)
{
    enum { OPT_SHA1 = 256, OPT_JWK, OPT_X5C };
    static const struct option opts[] = {
        {"expires", required_argument, NULL, 'e'},
        {"sha1", no_argument, NULL, OPT_SHA1},
        {"jwk", no_argument, NULL, OPT_JWK},
        {"x5c", no_argument, NULL, OPT_X5C},
        {"url", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    long expires = DEFAULT_EXPIRES;
    gen_opts o = {0};
    int c, n;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":e:u:h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            if (cli_parse_long(optarg, 1, MAX_EXPIRES, &expires) != 0)
                return cli_usage_error(CMD,
                                       "--expires '%s': expected a whole number of seconds from 1 to %ld "
                                       "(a document with expires 0 is invalid)",
                                       optarg, MAX_EXPIRES);
            break;
        case OPT_SHA1:
            o.sha1 = 1;
            break;
        case OPT_JWK:
            o.jwk = 1;
            break;
        case OPT_X5C:
            o.x5c = 1;
            break;
        case 'u':
            url = optarg;
            break;
        case 'h':
            fputs(generate_help, stdout);
            return CLI_OK;
        default:
            return cli_option_error(CMD, c, argv);
        }
    }
    n = argc - optind;
    if (url != NULL) {
        if (n > 0)
            return cli_usage_error(CMD, "--url prints a reference document: give no certificates with it");
        if (o.sha1)
            return cli_usage_error(CMD, "--sha1 is for fingerprints documents, not with --url");
        if (o.jwk || o.x5c)
            return cli_usage_error(CMD, "%s is for JWK Sets, not with --url (a reference has one form for both)",
                                   o.jwk ? "--jwk" : "--x5c");
        if (!posh_url_is_https(url, strlen(url)))
            return cli_usage_error(CMD,
                                   "--url '%s': not an acceptable https:// URL (scheme https, a host, no "
                                   "user name, RFC 3986 characters only, at most 2048 characters)",
                                   url);
        return print_reference(url, expires);
    }
    if (o.x5c && !o.jwk)
        return cli_usage_error(CMD, "--x5c is for JWK Sets: give --jwk with it");
    if (n < 1)
        return cli_usage_error(CMD, "give at least one certificate file, or --url URL");
    if (n > MAX_CERTS)
        return cli_usage_error(CMD, "at most %d certificates (POSH clients read at most %d descriptors)", MAX_CERTS,
                               MAX_CERTS);
    return print_certificates(argv + optind, n, expires, &o);
}
