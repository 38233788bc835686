/*
 * vouch.c - POSH's approval of one connection, and the program's own name checks answered from it.
 *
 * The leaf that POSH's verification judged is the very X509 object the program later gets from
 * SSL_get0_peer_certificate() (the session's peer, also for a session resumed from the same session object), so
 * the approval lives in that object's ex_data and dies with it. Another connection presenting the same
 * certificate, a server-side peer (other than the client certificate of an incoming XMPP stream whose `from`
 * POSH vouched for: that connection's own object, for that name), or a certificate the program parsed itself
 * is another object: it gets OpenSSL's own answer. Never a process-wide table keyed by the certificate's hash:
 * that would let one service's approval speak for every port, service and direction of the process.
 *
 * Copies: Ruby and Node read the names of an X509_dup() copy of the leaf (OpenSSL 3's X509_dup copies no
 * ex_data). A copy the program itself makes of an object that carries an approval (or a deferred one) shares
 * that approval's record: it answers like the original, is withdrawn with it, and dies with the original
 * object. A copy OpenSSL or libposh makes shares nothing, and neither does a certificate re-parsed from its DER
 * (d2i): that is exactly the "certificate the program parsed itself" above, indistinguishable from any other.
 *
 * Deferred approvals: a program that turned verification off (SSL_VERIFY_NONE) but sent SNI and checks the
 * name itself afterwards (mbsync, Node) gets a record with no approval yet, made only when its chain verified.
 * Its first name question about that SNI name (from its own code) runs the POSH lookup then; a program that
 * never asks (curl -k) causes no POSH request at all.
 *
 * The program asks in one of three ways, each answered only for calls from its own code (OpenSSL's own calls,
 * e.g. check_id and name constraints, see the certificate exactly as it is):
 *   - X509_check_host(x, name): stunnel's checkHost, Dovecot;
 *   - X509_get_ext_d2i(x, NID_subject_alt_name): curl, Python's getpeercert();
 *   - X509_get_ext_by_NID(x, NID_subject_alt_name) then X509_get_ext(x, i) then X509V3_EXT_d2i(): LuaSec, so
 *     Prosody. The extension returned is a substitute built at the program's first read of it: the
 *     certificate's own subjectAltName plus the vouched name, or, for a certificate without one, a
 *     subjectAltName holding only the vouched name at the index just past the certificate's own extensions.
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

typedef X509 *(*dup_fn)(const X509 *x);

/*
 * The program's view of the subjectAltName for one vouched name: the certificate's own plus the name. Made at
 * the program's first read of it (substitute_of), not at approval: a program that asks X509_check_host()
 * (stunnel, Dovecot) or nothing never pays for it. Read-only once published; freed with the record.
 */
typedef struct substitute {
    X509_EXTENSION *san;                 /* NULL if none could be made: the program gets OpenSSL's answers */
    int index;                           /* where the program finds it (past the last extension if it had none) */
    int added;                           /* the certificate has no subjectAltName of its own */
    char name[POSH_MAX_DOMAIN_LEN + 2];  /* the name it was made for */
} substitute;

typedef struct vouch {
    _Atomic int64_t until_ms;            /* the POSH result's expiry; 0 while deferred, once withdrawn or dead */
    atomic_int deferred;                 /* 1: POSH not asked yet, at the program's first name question it is */
    atomic_int refs;                     /* the original object and each copy the program made of it */
    const X509 *origin;                  /* the connection's own object: when it goes, the approval goes */
    char name[POSH_MAX_DOMAIN_LEN + 2];  /* the one name POSH vouched for on this connection (normalised) */
    char service[2 * POSH_MAX_SERVICE_LEN + 4];  /* deferred: the service to ask POSH about */
    _Atomic(substitute *) sub;           /* made at the program's first read, once (substitute_of) */
} vouch;

static struct {
    check_host_fn check_host;
    get_ext_d2i_fn get_ext_d2i;
    get_ext_by_nid_fn get_ext_by_nid;
    get_ext_fn get_ext;
    dup_fn dup;
    int foreign;  /* the program's X509_* names are not libcrypto's: never answer, only pass through */
} real;

static pthread_once_t vouch_index_once = PTHREAD_ONCE_INIT;
static int vouch_index = -1;
static atomic_int any_vouched;  /* fast path: until POSH vouches (or defers) once, the hooks only pass through */

/* OpenSSL's function, unless the program's own call reaches another library's: then that one, and no answers. */
static void *resolve(const char *name, void *self)
{
    return shim_resolve_openssl_or_own(name, self, &real.foreign);
}

void shim_vouch_init(void)
{
    real.check_host = (check_host_fn)resolve("X509_check_host", (void *)X509_check_host);
    real.get_ext_d2i = (get_ext_d2i_fn)resolve("X509_get_ext_d2i", (void *)X509_get_ext_d2i);
    real.get_ext_by_nid = (get_ext_by_nid_fn)resolve("X509_get_ext_by_NID", (void *)X509_get_ext_by_NID);
    real.get_ext = (get_ext_fn)resolve("X509_get_ext", (void *)X509_get_ext);
    real.dup = (dup_fn)resolve("X509_dup", (void *)X509_dup);
}

static void vouch_unref(vouch *v)
{
    substitute *sub;
    if (v == NULL || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    if ((sub = atomic_load(&v->sub)) != NULL) {
        X509_EXTENSION_free(sub->san);
        free(sub);
    }
    free(v);
}

/* The original object goes with its connection: the copies' approval goes with it. */
static void vouch_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    vouch *v = ptr;
    if (v == NULL)
        return;
    if (parent == v->origin) {
        atomic_store(&v->deferred, 0);
        atomic_store(&v->until_ms, 0);
    }
    vouch_unref(v);
}

/* OpenSSL's own ex_data duplication (not X509_dup, which has none in OpenSSL 3) carries no approval. */
static int vouch_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx, long argl, void *argp)
{
    *from_d = NULL;
    return 1;
}

static void vouch_index_init(void)
{
    vouch_index = X509_get_ex_new_index(0, NULL, NULL, vouch_dup, vouch_free);
}

/* The record on leaf, made if there is none (leaf is then its origin); NULL when out of memory. */
static vouch *vouch_of(X509 *leaf)
{
    vouch *v;
    pthread_once(&vouch_index_once, vouch_index_init);
    if (vouch_index < 0 || leaf == NULL)
        return NULL;
    if ((v = X509_get_ex_data(leaf, vouch_index)) != NULL)
        return v;
    if ((v = calloc(1, sizeof(*v))) == NULL)
        return NULL;
    atomic_init(&v->refs, 1);
    v->origin = leaf;
    if (!X509_set_ex_data(leaf, vouch_index, v)) {
        free(v);
        return NULL;
    }
    return v;
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

/* The substitute subjectAltName of leaf for name, and where the program will look for it; NULL out of memory. */
static substitute *make_substitute(const X509 *leaf, const char *name)
{
    int crit = -1;
    GENERAL_NAMES *gens;
    substitute *sub = calloc(1, sizeof(*sub));

    if (sub == NULL)
        return NULL;
    snprintf(sub->name, sizeof(sub->name), "%s", name);
    gens = real.get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL && crit == -2)
        goto done; /* several subjectAltName extensions: a malformed certificate gets no substitute */
    if (gens == NULL && (gens = sk_GENERAL_NAME_new_null()) == NULL)
        goto done;
    if (has_dns_name(gens, name) || add_dns_name(gens, name))
        sub->san = X509V3_EXT_i2d(NID_subject_alt_name, crit > 0, gens);
    GENERAL_NAMES_free(gens);
    sub->index = real.get_ext_by_nid(leaf, NID_subject_alt_name, -1);
    sub->added = sub->index < 0;
    if (sub->added)
        sub->index = X509_get_ext_count(leaf);
done:
    if (sub->san == NULL)
        posh_log(POSH_LOG_ERROR, "%s: out of memory or a malformed subjectAltName: a name check reading the "
                 "subjectAltName will not see POSH's approval", name);
    return sub;
}

/*
 * The substitute of an approval v for the program reading x (the connection's object or the program's copy of
 * it: the same extensions), made on the first read and shared by every later one: two threads reading at once
 * may both make one, the first published stays and the other is freed. NULL when there is none for v's name.
 */
static const substitute *substitute_of(const vouch *v, const X509 *x)
{
    substitute *sub = atomic_load(&((vouch *)v)->sub), *made;
    if (sub == NULL) {
        if ((made = make_substitute(x, v->name)) == NULL)
            return NULL;
        if (atomic_compare_exchange_strong(&((vouch *)v)->sub, &sub, made)) {
            sub = made;
        } else {
            X509_EXTENSION_free(made->san);
            free(made);
        }
    }
    /* Made for another name (the record was vouched again since): none, the program gets OpenSSL's answers. */
    return sub->san != NULL && strcmp(sub->name, v->name) == 0 ? sub : NULL;
}

/*
 * Called by the verification (on the handshake's thread, before the program sees the object), or by a deferred
 * lookup at the program's first question (leaf may then be a copy: the record is the one they share).
 */
void shim_vouch_remember(X509 *leaf, const char *reference, long ttl)
{
    vouch *v = vouch_of(leaf);

    if (v == NULL) {
        /* Fails closed: the program's own name check then gets OpenSSL's answer. */
        posh_log(POSH_LOG_ERROR, "%s: out of memory: the program's own name check will not see POSH's approval",
                 reference);
        return;
    }
    atomic_store(&v->deferred, 0);
    snprintf(v->name, sizeof(v->name), "%s", reference);
    /* Last: a reader that sees the expiry sees the name written above (its substitute is made on first read). */
    atomic_store(&v->until_ms, posh_now_ms() + (ttl > 31536000 ? 31536000 : ttl) * 1000);
    atomic_store(&any_vouched, 1);
    posh_log(POSH_LOG_INFO, "%s: certificate vouched for by POSH for %ld s", reference, ttl);
}

void shim_vouch_forget(X509 *leaf)
{
    vouch *v;
    if (vouch_index >= 0 && leaf != NULL && (v = X509_get_ex_data(leaf, vouch_index)) != NULL) {
        atomic_store(&v->deferred, 0);
        atomic_store(&v->until_ms, 0);
        posh_log(POSH_LOG_DEBUG, "%s: the verification failed: POSH's approval withdrawn", v->name);
    }
}

void shim_vouch_defer(X509 *leaf, const char *reference, const char *service)
{
    vouch *v = vouch_of(leaf);
    if (v == NULL) {
        posh_log(POSH_LOG_ERROR, "%s: out of memory: the program's own name check will not see POSH", reference);
        return;
    }
    atomic_store(&v->until_ms, 0);
    snprintf(v->name, sizeof(v->name), "%s", reference);
    snprintf(v->service, sizeof(v->service), "%s", service);
    atomic_store(&v->deferred, 1);
    atomic_store(&any_vouched, 1);
    posh_log(POSH_LOG_DEBUG, "%s %s: verification off, the chain verified: POSH asked only if the program checks "
             "the name itself", reference, service);
}

/*
 * A deferred record and the program's first question about asked (NULL: it reads the subjectAltName, whatever
 * name it then compares): run the POSH lookup for the SNI name now. Only the first question runs it; a
 * question about another name leaves the record deferred. Another thread asking meanwhile gets OpenSSL's
 * answer (fails closed) rather than waiting on a lock held across the fetch.
 */
static void resolve_deferred(vouch *v, X509 *x, const char *asked)
{
    char reference[POSH_MAX_DOMAIN_LEN + 2], service[sizeof(v->service)];
    int expected = 1;

    if (asked != NULL && strcmp(asked, v->name) != 0)
        return;
    if (!atomic_compare_exchange_strong(&v->deferred, &expected, 0))
        return;
    memcpy(reference, v->name, sizeof(reference));
    memcpy(service, v->service, sizeof(service));
    posh_log(POSH_LOG_DEBUG, "%s %s: the program checks the name itself: POSH asked now", reference, service);
    if (!posh_verify_deferred(x, reference, service))
        atomic_store(&v->until_ms, 0);
}

/*
 * The live approval on exactly this certificate object (or the original it is the program's copy of), when
 * the caller is the program (not OpenSSL, not POSH's own fetch); NULL otherwise. asked: the name the program
 * checks (normalised), NULL when it reads the subjectAltName. Cheapest tests first: OpenSSL calls these
 * functions all the time.
 */
static const vouch *approval(const X509 *x, const void *caller, const char *asked)
{
    vouch *v;
    if (!atomic_load(&any_vouched) || real.foreign || x == NULL || (v = X509_get_ex_data(x, vouch_index)) == NULL ||
        posh_verify_in_lookup() || !shim_caller_is_program(caller))
        return NULL;
    if (atomic_load(&v->deferred))
        resolve_deferred(v, (X509 *)x, asked);
    if (atomic_load(&v->until_ms) <= posh_now_ms())
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
    if (r != 0 || chk == NULL || !atomic_load(&any_vouched))
        return r;
    len = chklen != 0 ? chklen : strlen(chk);
    if (len >= sizeof(name) || memchr(chk, '\0', len) != NULL)
        return r;
    memcpy(name, chk, len);
    name[len] = '\0';
    if (posh_domain_normalize(name, norm, sizeof(norm)) != POSH_OK || (v = approval(x, caller, norm)) == NULL ||
        strcmp(v->name, norm) != 0)
        return r;
    if (peername != NULL && (*peername = OPENSSL_strdup(name)) == NULL)
        return -1;
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", norm);
    return 1;
}

SHIM_EXPORT void *X509_get_ext_d2i(const X509 *x, int nid, int *crit, int *idx)
{
    const void *caller = __builtin_return_address(0);
    const substitute *sub;
    const vouch *v;
    void *r;

    shim_ready();
    if (real.get_ext_d2i == NULL)
        return NULL;
    if (nid != NID_subject_alt_name || idx != NULL || (v = approval(x, caller, NULL)) == NULL ||
        (sub = substitute_of(v, x)) == NULL)
        return real.get_ext_d2i(x, nid, crit, idx);
    /* The substitute decodes to a fresh GENERAL_NAMES the caller frees, as the real function's result. */
    if ((r = X509V3_EXT_d2i(sub->san)) != NULL && crit != NULL)
        *crit = X509_EXTENSION_get_critical(sub->san);
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", v->name);
    return r;
}

SHIM_EXPORT int X509_get_ext_by_NID(const X509 *x, int nid, int lastpos)
{
    const void *caller = __builtin_return_address(0);
    const substitute *sub;
    const vouch *v;
    int r;

    shim_ready();
    if (real.get_ext_by_nid == NULL)
        return -2;
    r = real.get_ext_by_nid(x, nid, lastpos);
    if (r != -1 || nid != NID_subject_alt_name || (v = approval(x, caller, NULL)) == NULL ||
        (sub = substitute_of(v, x)) == NULL || !sub->added || lastpos >= sub->index)
        return r;
    return sub->index;
}

SHIM_EXPORT X509_EXTENSION *X509_get_ext(const X509 *x, int loc)
{
    const void *caller = __builtin_return_address(0);
    const substitute *sub;
    const vouch *v;

    shim_ready();
    if (real.get_ext == NULL)
        return NULL;
    if ((v = approval(x, caller, NULL)) == NULL || (sub = substitute_of(v, x)) == NULL || loc != sub->index)
        return real.get_ext(x, loc);
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", v->name);
    return sub->san;
}

/*
 * A copy the program makes of a certificate object that carries an approval (or a deferred one) shares it, so
 * that its name questions are answered like the original's (Ruby's and Node's peer certificate objects). The
 * copy's answers end with the original's: withdrawn, expired, or the original freed with its connection.
 */
SHIM_EXPORT X509 *X509_dup(const X509 *x)
{
    const void *caller = __builtin_return_address(0);
    X509 *copy;
    vouch *v;

    shim_ready();
    if (real.dup == NULL)
        return NULL;
    copy = real.dup(x);
    if (copy == NULL || !atomic_load(&any_vouched) || real.foreign || (v = X509_get_ex_data(x, vouch_index)) == NULL ||
        (!atomic_load(&v->deferred) && atomic_load(&v->until_ms) <= posh_now_ms()) || posh_verify_in_lookup() ||
        !shim_caller_is_program(caller))
        return copy;
    atomic_fetch_add(&v->refs, 1);
    if (!X509_set_ex_data(copy, vouch_index, v)) {
        vouch_unref(v); /* fails closed: the copy gets OpenSSL's answers */
        posh_log(POSH_LOG_ERROR, "%s: out of memory: a copy of the certificate does not see POSH's approval", v->name);
    }
    return copy;
}
