/*
 * vouch.c - POSH's approval of one connection, and the program's own name checks answered from it.
 *
 * The leaf that POSH's verification judged is the very X509 object the program later gets from
 * SSL_get0_peer_certificate() (the session's peer, also for a session resumed from the same session object), so
 * the approval lives in that object's ex_data and dies with it. Another connection presenting the same
 * certificate, a server-side peer, a copy (X509_dup) or a certificate the program parsed itself is another
 * object: it gets OpenSSL's own answer. Never a process-wide table keyed by the certificate's hash: that would
 * let one service's approval speak for every port, service and direction of the process.
 *
 * The program asks in one of three ways, each answered only for calls from its own code (OpenSSL's own calls,
 * e.g. check_id and name constraints, see the certificate exactly as it is):
 *   - X509_check_host(x, name): stunnel's checkHost, Dovecot;
 *   - X509_get_ext_d2i(x, NID_subject_alt_name): curl, Python's getpeercert();
 *   - X509_get_ext_by_NID(x, NID_subject_alt_name) then X509_get_ext(x, i) then X509V3_EXT_d2i(): LuaSec, so
 *     Prosody. The extension returned is a substitute built when POSH vouched: the certificate's own
 *     subjectAltName plus the vouched name, or, for a certificate without one, a subjectAltName holding only
 *     the vouched name at the index just past the certificate's own extensions.
 */
#include "shim_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

typedef int (*check_host_fn)(X509 *x, const char *chk, size_t chklen, unsigned int flags, char **peername);
typedef void *(*get_ext_d2i_fn)(const X509 *x, int nid, int *crit, int *idx);
typedef int (*get_ext_by_nid_fn)(const X509 *x, int nid, int lastpos);
typedef X509_EXTENSION *(*get_ext_fn)(const X509 *x, int loc);

static struct {
    check_host_fn check_host;
    get_ext_d2i_fn get_ext_d2i;
    get_ext_by_nid_fn get_ext_by_nid;
    get_ext_fn get_ext;
} real;

typedef struct vouch {
    int64_t until_ms;                    /* the POSH result's expiry; 0 once withdrawn */
    char name[POSH_MAX_DOMAIN_LEN + 2];  /* the one name POSH vouched for on this connection (normalised) */
    X509_EXTENSION *san;                 /* the certificate's subjectAltName plus name; NULL if none could be made */
    int san_index;                       /* where the program finds it (past the last extension if it had none) */
    int san_added;                       /* the certificate has no subjectAltName of its own */
} vouch;

static pthread_once_t vouch_index_once = PTHREAD_ONCE_INIT;
static int vouch_index = -1;
static atomic_int any_vouched;  /* fast path: until POSH vouches once, the name hooks only pass through */

void shim_vouch_init(void)
{
    real.check_host = (check_host_fn)shim_resolve("X509_check_host", OPENSSL_VERSION_NODE, (void *)X509_check_host);
    real.get_ext_d2i =
        (get_ext_d2i_fn)shim_resolve("X509_get_ext_d2i", OPENSSL_VERSION_NODE, (void *)X509_get_ext_d2i);
    real.get_ext_by_nid =
        (get_ext_by_nid_fn)shim_resolve("X509_get_ext_by_NID", OPENSSL_VERSION_NODE, (void *)X509_get_ext_by_NID);
    real.get_ext = (get_ext_fn)shim_resolve("X509_get_ext", OPENSSL_VERSION_NODE, (void *)X509_get_ext);
}

static void vouch_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    vouch *v = ptr;
    if (v != NULL)
        X509_EXTENSION_free(v->san);
    free(v);
}

/* A copy of a certificate object is not the connection's certificate: it carries no approval. */
static int vouch_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx, long argl, void *argp)
{
    *from_d = NULL;
    return 1;
}

static void vouch_index_init(void)
{
    vouch_index = X509_get_ex_new_index(0, NULL, NULL, vouch_dup, vouch_free);
}

static int has_dns_name(const GENERAL_NAMES *gens, const char *name)
{
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS && (size_t)ASN1_STRING_length(g->d.dNSName) == strlen(name) &&
            OPENSSL_strncasecmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), name, strlen(name)) == 0)
            return 1;
    }
    return 0;
}

/* Append a dNSName; 0 when out of memory (gens unchanged). */
static int add_dns_name(GENERAL_NAMES *gens, const char *name)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (g == NULL || s == NULL || !ASN1_STRING_set(s, name, (int)strlen(name)))
        goto fail;
    GENERAL_NAME_set0_value(g, GEN_DNS, s);
    s = NULL;
    if (!sk_GENERAL_NAME_push(gens, g))
        goto fail;
    return 1;
fail:
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(g);
    return 0;
}

/*
 * The substitute subjectAltName of leaf for name, and where the program will look for it. Made once, at
 * approval, so that the program's reads only ever hand out this object (read-only from then on).
 */
static void make_san(vouch *v, X509 *leaf)
{
    int crit = -1;
    GENERAL_NAMES *gens = real.get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);

    v->san = NULL;
    if (gens == NULL && crit == -2)
        return; /* several subjectAltName extensions: a malformed certificate gets no substitute */
    if (gens == NULL && (gens = sk_GENERAL_NAME_new_null()) == NULL)
        return;
    if (has_dns_name(gens, v->name) || add_dns_name(gens, v->name))
        v->san = X509V3_EXT_i2d(NID_subject_alt_name, crit > 0, gens);
    GENERAL_NAMES_free(gens);
    v->san_index = real.get_ext_by_nid(leaf, NID_subject_alt_name, -1);
    v->san_added = v->san_index < 0;
    if (v->san_added)
        v->san_index = X509_get_ext_count(leaf);
}

/* Called by the verification (on the handshake's thread, before the program sees the object). */
void shim_vouch_remember(X509 *leaf, const char *reference, long ttl)
{
    vouch *v;

    pthread_once(&vouch_index_once, vouch_index_init);
    if (vouch_index < 0 || leaf == NULL)
        goto fail;
    if ((v = X509_get_ex_data(leaf, vouch_index)) == NULL) {
        if ((v = calloc(1, sizeof(*v))) == NULL)
            goto fail;
        if (!X509_set_ex_data(leaf, vouch_index, v)) {
            free(v);
            goto fail;
        }
    }
    X509_EXTENSION_free(v->san);
    snprintf(v->name, sizeof(v->name), "%s", reference);
    make_san(v, leaf);
    if (v->san == NULL)
        posh_log(POSH_LOG_ERROR, "%s: out of memory or a malformed subjectAltName: LuaSec's name check will not "
                 "see POSH's approval", reference);
    v->until_ms = posh_now_ms() + (ttl > 31536000 ? 31536000 : ttl) * 1000;
    atomic_store(&any_vouched, 1);
    posh_log(POSH_LOG_INFO, "%s: certificate vouched for by POSH for %ld s", reference, ttl);
    return;
fail:
    /* Fails closed: the program's own name check then gets OpenSSL's answer. */
    posh_log(POSH_LOG_ERROR, "%s: out of memory: the program's own name check will not see POSH's approval",
             reference);
}

void shim_vouch_forget(X509 *leaf)
{
    vouch *v;
    if (vouch_index >= 0 && leaf != NULL && (v = X509_get_ex_data(leaf, vouch_index)) != NULL) {
        v->until_ms = 0;
        posh_log(POSH_LOG_DEBUG, "%s: the verification failed: POSH's approval withdrawn", v->name);
    }
}

/*
 * The live approval on exactly this certificate object, when the caller is the program (not OpenSSL, not
 * POSH's own fetch); NULL otherwise. Cheapest tests first: OpenSSL calls these functions all the time.
 */
static const vouch *approval(const X509 *x, const void *caller)
{
    const vouch *v;
    if (!atomic_load(&any_vouched) || x == NULL || (v = X509_get_ex_data(x, vouch_index)) == NULL ||
        v->until_ms <= posh_now_ms() || posh_verify_in_lookup() || !shim_caller_is_program(caller))
        return NULL;
    return v;
}

/* ---- the interposed functions ---- */

SHIM_EXPORT int X509_check_host(X509 *x, const char *chk, size_t chklen, unsigned int flags, char **peername)
{
    const void *caller = __builtin_return_address(0);
    char name[POSH_MAX_DOMAIN_LEN + 2], norm[POSH_MAX_DOMAIN_LEN + 2];
    const vouch *v;
    size_t len;
    int r;

    shim_ready();
    if (real.check_host == NULL)
        return -1;
    r = real.check_host(x, chk, chklen, flags, peername);
    if (r != 0 || chk == NULL || (v = approval(x, caller)) == NULL)
        return r;
    len = chklen != 0 ? chklen : strlen(chk);
    if (len >= sizeof(name) || memchr(chk, '\0', len) != NULL)
        return r;
    memcpy(name, chk, len);
    name[len] = '\0';
    if (posh_domain_normalize(name, norm, sizeof(norm)) != POSH_OK || strcmp(v->name, norm) != 0)
        return r;
    if (peername != NULL && (*peername = OPENSSL_strdup(name)) == NULL)
        return -1;
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", norm);
    return 1;
}

SHIM_EXPORT void *X509_get_ext_d2i(const X509 *x, int nid, int *crit, int *idx)
{
    const void *caller = __builtin_return_address(0);
    const vouch *v;
    void *r;

    shim_ready();
    if (real.get_ext_d2i == NULL)
        return NULL;
    if (nid != NID_subject_alt_name || idx != NULL || (v = approval(x, caller)) == NULL || v->san == NULL)
        return real.get_ext_d2i(x, nid, crit, idx);
    /* The substitute decodes to a fresh GENERAL_NAMES the caller frees, as the real function's result. */
    if ((r = X509V3_EXT_d2i(v->san)) != NULL && crit != NULL)
        *crit = X509_EXTENSION_get_critical(v->san);
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", v->name);
    return r;
}

SHIM_EXPORT int X509_get_ext_by_NID(const X509 *x, int nid, int lastpos)
{
    const void *caller = __builtin_return_address(0);
    const vouch *v;
    int r;

    shim_ready();
    if (real.get_ext_by_nid == NULL)
        return -2;
    r = real.get_ext_by_nid(x, nid, lastpos);
    if (r != -1 || nid != NID_subject_alt_name || (v = approval(x, caller)) == NULL || v->san == NULL ||
        !v->san_added || lastpos >= v->san_index)
        return r;
    return v->san_index;
}

SHIM_EXPORT X509_EXTENSION *X509_get_ext(const X509 *x, int loc)
{
    const void *caller = __builtin_return_address(0);
    const vouch *v;

    shim_ready();
    if (real.get_ext == NULL)
        return NULL;
    if ((v = approval(x, caller)) == NULL || v->san == NULL || loc != v->san_index)
        return real.get_ext(x, loc);
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", v->name);
    return v->san;
}
