/*
 * shim.c - libposh-preload.so: loaded with LD_PRELOAD, gives every OpenSSL client connection of an unmodified
 * program libposh's POSH fallback. It interposes SSL_CTX_new/SSL_CTX_new_ex (install POSH's certificate
 * verification on every context, verify mode untouched), SSL_CTX_set_cert_verify_callback (an application's
 * own callback is chained behind POSH instead of replacing it), and X509_check_host/X509_get_ext_d2i (programs
 * that check names themselves, curl and stunnel, get POSH's answer for exactly the certificate object of the
 * connection POSH vouched for, and the name it vouched for it under). See the README section "The LD_PRELOAD shim" and notes/openssl-verification-and-preload.md.
 */
#include "client_internal.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define SHIM_EXPORT __attribute__((visibility("default")))
#define OPENSSL_VERSION_NODE "OPENSSL_3.0.0"
#define SERVICE_BUF (2 * POSH_MAX_SERVICE_LEN + 4)

/* ---- the real functions ---- */

typedef SSL_CTX *(*ctx_new_fn)(const SSL_METHOD *meth);
typedef SSL_CTX *(*ctx_new_ex_fn)(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth);
typedef void (*set_cert_verify_fn)(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg);
typedef int (*check_host_fn)(X509 *x, const char *chk, size_t chklen, unsigned int flags, char **peername);
typedef void *(*get_ext_d2i_fn)(const X509 *x, int nid, int *crit, int *idx);

static struct {
    ctx_new_fn ctx_new;
    ctx_new_ex_fn ctx_new_ex;
    set_cert_verify_fn set_cert_verify;
    check_host_fn check_host;
    get_ext_d2i_fn get_ext_d2i;
    void *base_ssl, *base_crypto, *base_self;  /* load addresses of libssl, libcrypto and this module */
} real;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* The next definition after ours, at OpenSSL's symbol version (any version as a fallback); never ourselves. */
static void *resolve(const char *name, void *self)
{
    void *f = dlvsym(RTLD_NEXT, name, OPENSSL_VERSION_NODE);
    if (f == NULL)
        f = dlsym(RTLD_NEXT, name);
    return f == self ? NULL : f;
}

static void *module_base(const void *addr)
{
    Dl_info info;
    return addr != NULL && dladdr(addr, &info) != 0 ? info.dli_fbase : NULL;
}

static int choose_service(SSL *ssl, char *out, size_t outlen);
static void remember_vouched(X509 *leaf, const char *reference, long ttl);
static void forget_vouched(X509 *leaf);

/* Only symbols and plain memory here: touching OpenSSL or libcurl before the program does changes its setup. */
static void shim_init(void)
{
    static const posh_shim_hooks hooks = {choose_service, remember_vouched, forget_vouched};
    real.ctx_new = (ctx_new_fn)resolve("SSL_CTX_new", (void *)SSL_CTX_new);
    real.ctx_new_ex = (ctx_new_ex_fn)resolve("SSL_CTX_new_ex", (void *)SSL_CTX_new_ex);
    real.set_cert_verify =
        (set_cert_verify_fn)resolve("SSL_CTX_set_cert_verify_callback", (void *)SSL_CTX_set_cert_verify_callback);
    real.check_host = (check_host_fn)resolve("X509_check_host", (void *)X509_check_host);
    real.get_ext_d2i = (get_ext_d2i_fn)resolve("X509_get_ext_d2i", (void *)X509_get_ext_d2i);
    real.base_ssl = module_base((void *)real.ctx_new);
    real.base_crypto = module_base((void *)real.check_host);
    real.base_self = module_base((void *)shim_init);
    posh_log_default_off();
    posh_verify_set_shim_hooks(&hooks);
}

__attribute__((constructor)) static void shim_constructor(void)
{
    pthread_once(&init_once, shim_init);
}

static void shim_ready(void)
{
    pthread_once(&init_once, shim_init);
}

/*
 * Is this return address in the program's own code, as opposed to OpenSSL itself, libposh or this module?
 * OpenSSL calls X509_check_host and X509_get_ext_d2i through the PLT too (check_id, name constraints): those
 * calls must see the certificate exactly as it is. Unknown code (no module) is not answered either.
 */
static int caller_is_program(const void *ret)
{
    Dl_info info;
    const char *base;
    if (ret == NULL || dladdr(ret, &info) == 0 || info.dli_fbase == NULL)
        return 0;
    if (info.dli_fbase == real.base_ssl || info.dli_fbase == real.base_crypto || info.dli_fbase == real.base_self)
        return 0;
    base = info.dli_fname != NULL ? strrchr(info.dli_fname, '/') : NULL;
    base = base != NULL ? base + 1 : info.dli_fname;
    return base == NULL || strncmp(base, "libposh.so", 10) != 0;
}

/* ---- the service of a connection ---- */

/* The documented port map (README "The LD_PRELOAD shim"): one POSH document per protocol, whether the
 * program speaks it with STARTTLS or with TLS from the start. */
static const struct {
    unsigned short port;
    const char *service;
} port_map[] = {
    {25, "smtp"},          {110, "pop3"},         {143, "imap"},         {389, "ldap"},
    {465, "submission"},   {587, "submission"},   {636, "ldap"},         {993, "imap"},
    {995, "pop3"},         {5222, "xmpp-client"}, {5269, "xmpp-server"},
};

static pthread_once_t env_service_once = PTHREAD_ONCE_INIT;
static int env_service_state;  /* 0 unset, 1 valid (env_service), -1 invalid: POSH not used at all */
static char env_service[SERVICE_BUF];
static atomic_int unknown_port_logged;

static void env_service_read(void)
{
    const char *v = posh_getenv("POSH_SERVICE");
    char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    if (v == NULL)
        return;
    if (posh_service_parse(v, svc, proto) != POSH_OK) {
        env_service_state = -1;
        posh_log(POSH_LOG_ERROR, "POSH_SERVICE: \"%.100s\" is not a service name ([a-z0-9-]{1,63} or "
                 "_service._proto): POSH is not used", v);
        return;
    }
    snprintf(env_service, sizeof(env_service), "_%s._%s", svc, proto);
    env_service_state = 1;
}

/* The peer's TCP port, or -1 (no socket: a memory or custom BIO, a Unix socket). */
static int peer_port(SSL *ssl)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = SSL_get_rfd(ssl);
    if (fd < 0)
        fd = SSL_get_wfd(ssl);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

static int choose_service(SSL *ssl, char *out, size_t outlen)
{
    int port;
    pthread_once(&env_service_once, env_service_read);
    if (env_service_state == 1) {
        snprintf(out, outlen, "%s", env_service);
        return 1;
    }
    if (env_service_state == -1)
        return 0;
    port = peer_port(ssl);
    for (size_t i = 0; port > 0 && i < sizeof(port_map) / sizeof(port_map[0]); i++) {
        if (port_map[i].port == port) {
            snprintf(out, outlen, "_%s._tcp", port_map[i].service);
            return 1;
        }
    }
    if (atomic_exchange(&unknown_port_logged, 1) == 0) {
        if (port > 0)
            posh_log(POSH_LOG_WARNING, "no POSH service is known for port %d: POSH is not used for such "
                     "connections (set POSH_SERVICE); logged once", port);
        else
            posh_log(POSH_LOG_WARNING, "the peer's port is unknown (no socket under the TLS connection): POSH "
                     "is not used for such connections (set POSH_SERVICE); logged once");
    }
    return 0;
}

/*
 * ---- what POSH vouched for: attached to the verified connection's own leaf certificate object ----
 *
 * The leaf that POSH's verification judged is the very X509 object the program later gets from
 * SSL_get0_peer_certificate() (the session's peer, also for a resumed session), so the approval lives in that
 * object's ex_data and dies with it. Another connection presenting the same certificate, a server-side peer, a
 * copy (X509_dup) or a certificate the program parsed itself is another object: it gets OpenSSL's own answer.
 * Never a process-wide table keyed by the certificate's hash: that would let one service's approval speak
 * for every port, service and direction of the process.
 */

typedef struct vouch {
    int64_t until_ms;                    /* the POSH result's expiry */
    char name[POSH_MAX_DOMAIN_LEN + 2];  /* the one name POSH vouched for on this connection (normalised) */
} vouch;

static pthread_once_t vouch_index_once = PTHREAD_ONCE_INIT;
static int vouch_index = -1;
static atomic_int any_vouched;  /* fast path: until POSH vouches once, the name hooks only pass through */

static void vouch_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
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

/* Called by the verification (on the handshake's thread, before the program sees the object). */
static void remember_vouched(X509 *leaf, const char *reference, long ttl)
{
    vouch *v;

    pthread_once(&vouch_index_once, vouch_index_init);
    if (vouch_index < 0 || leaf == NULL)
        goto fail;
    if ((v = X509_get_ex_data(leaf, vouch_index)) == NULL) {
        if ((v = malloc(sizeof(*v))) == NULL)
            goto fail;
        if (!X509_set_ex_data(leaf, vouch_index, v)) {
            free(v);
            goto fail;
        }
    }
    v->until_ms = posh_now_ms() + (ttl > 31536000 ? 31536000 : ttl) * 1000;
    snprintf(v->name, sizeof(v->name), "%s", reference);
    atomic_store(&any_vouched, 1);
    posh_log(POSH_LOG_INFO, "%s: certificate vouched for by POSH for %ld s", reference, ttl);
    return;
fail:
    /* Fails closed: the program's own name check then gets OpenSSL's answer. */
    posh_log(POSH_LOG_ERROR, "%s: out of memory: the program's own name check will not see POSH's approval",
             reference);
}

static void forget_vouched(X509 *leaf)
{
    vouch *v;
    if (vouch_index >= 0 && leaf != NULL && (v = X509_get_ex_data(leaf, vouch_index)) != NULL) {
        v->until_ms = 0;
        posh_log(POSH_LOG_DEBUG, "%s: the verification failed: POSH's approval withdrawn", v->name);
    }
}

/* The name POSH vouched for on exactly this certificate object, while it is live; NULL otherwise. */
static const char *vouched_name(const X509 *x)
{
    const vouch *v = X509_get_ex_data(x, vouch_index);
    return v != NULL && v->until_ms > posh_now_ms() ? v->name : NULL;
}

/* Should a name hook answer this call? Only after POSH vouched once, outside POSH's own fetches, for the
 * program's own code. */
static int hook_applies(const void *caller)
{
    return atomic_load(&any_vouched) && !posh_verify_in_lookup() && caller_is_program(caller);
}

/* ---- the interposed functions ---- */

static void install(SSL_CTX *ctx)
{
    /* POSH's own fetches (libcurl) create contexts too: those are never given POSH. */
    if (ctx == NULL || posh_verify_in_lookup())
        return;
    ERR_set_mark();
    if (!posh_ctx_install_transparent(ctx))
        posh_log(POSH_LOG_ERROR, "out of memory: POSH not installed on a TLS context");
    ERR_pop_to_mark();
}

SHIM_EXPORT SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth)
{
    SSL_CTX *ctx;
    shim_ready();
    if (real.ctx_new == NULL)
        return NULL;
    ctx = real.ctx_new(meth);
    install(ctx);
    return ctx;
}

SHIM_EXPORT SSL_CTX *SSL_CTX_new_ex(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth)
{
    SSL_CTX *ctx;
    shim_ready();
    if (real.ctx_new_ex == NULL)
        return NULL;
    ctx = real.ctx_new_ex(libctx, propq, meth);
    install(ctx);
    return ctx;
}

/*
 * An application installing its own certificate verification would silently switch POSH off: instead its
 * callback becomes the chain verification POSH runs (with the host names removed only when POSH vouched), so
 * it keeps every say it had. Contexts without POSH (POSH's own) get the call unchanged.
 */
SHIM_EXPORT void SSL_CTX_set_cert_verify_callback(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg)
{
    shim_ready();
    if (real.set_cert_verify == NULL)
        return;
    if (cb != NULL && posh_is_cert_verify_callback(cb)) {
        real.set_cert_verify(ctx, cb, arg);
        return;
    }
    if (posh_ctx_chain_cert_verify(ctx, cb, arg)) {
        posh_log(POSH_LOG_DEBUG, "the application's certificate verification callback runs behind POSH");
        return;
    }
    real.set_cert_verify(ctx, cb, arg);
}

/*
 * stunnel (checkHost) and others call X509_check_host themselves, outside OpenSSL's check_id. For exactly a
 * certificate POSH vouched for and the name it vouched for it under, their question gets POSH's answer.
 */
SHIM_EXPORT int X509_check_host(X509 *x, const char *chk, size_t chklen, unsigned int flags, char **peername)
{
    const void *caller = __builtin_return_address(0);
    char name[POSH_MAX_DOMAIN_LEN + 2], norm[POSH_MAX_DOMAIN_LEN + 2];
    const char *vouched;
    size_t len;
    int r;

    shim_ready();
    if (real.check_host == NULL)
        return -1;
    r = real.check_host(x, chk, chklen, flags, peername);
    if (r != 0 || x == NULL || chk == NULL || !hook_applies(caller) || (vouched = vouched_name(x)) == NULL)
        return r;
    len = chklen != 0 ? chklen : strlen(chk);
    if (len >= sizeof(name) || memchr(chk, '\0', len) != NULL)
        return r;
    memcpy(name, chk, len);
    name[len] = '\0';
    if (posh_domain_normalize(name, norm, sizeof(norm)) != POSH_OK || strcmp(vouched, norm) != 0)
        return r;
    if (peername != NULL && (*peername = OPENSSL_strdup(name)) == NULL)
        return -1;
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", norm);
    return 1;
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
 * curl checks names itself after the handshake, from X509_get_ext_d2i(NID_subject_alt_name). For a
 * certificate POSH vouched for, the program's own copy of the subjectAltName also lists the vouched names.
 */
SHIM_EXPORT void *X509_get_ext_d2i(const X509 *x, int nid, int *crit, int *idx)
{
    const void *caller = __builtin_return_address(0);
    const char *vouched;
    GENERAL_NAMES *gens;
    void *r;

    shim_ready();
    if (real.get_ext_d2i == NULL)
        return NULL;
    r = real.get_ext_d2i(x, nid, crit, idx);
    if (nid != NID_subject_alt_name || idx != NULL || x == NULL || !hook_applies(caller) ||
        (vouched = vouched_name(x)) == NULL)
        return r;
    gens = r;
    if (gens == NULL && (gens = sk_GENERAL_NAME_new_null()) == NULL)
        return NULL;
    if (!has_dns_name(gens, vouched) && !add_dns_name(gens, vouched)) {
        GENERAL_NAMES_free(gens);
        return NULL;
    }
    if (r == NULL && crit != NULL)
        *crit = 0;
    posh_log(POSH_LOG_DEBUG, "%s: the program's own name check answered by POSH", vouched);
    return gens;
}
