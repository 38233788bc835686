/*
 * shim.c - libposh-preload.so: loaded with LD_PRELOAD, gives every OpenSSL client connection of an unmodified
 * program libposh's POSH fallback. This file: start-up, SSL_CTX_new/SSL_CTX_new_ex (install POSH's certificate
 * verification on every context, verify mode untouched), SSL_CTX_set_cert_verify_callback (an application's own
 * callback is chained behind POSH instead of replacing it), and the service of a connection. vouch.c answers the
 * program's own name checks for the connection POSH vouched for; stream.c reads the reference identifier from
 * the XMPP stream header the program sent. See the README section "The LD_PRELOAD shim" and
 * notes/openssl-verification-and-preload.md.
 */
#include "shim_internal.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <link.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define SERVICE_BUF (2 * POSH_MAX_SERVICE_LEN + 4)

/* ---- the real functions ---- */

typedef SSL_CTX *(*ctx_new_fn)(const SSL_METHOD *meth);
typedef SSL_CTX *(*ctx_new_ex_fn)(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth);
typedef void (*set_cert_verify_fn)(SSL_CTX *ctx, int (*cb)(X509_STORE_CTX *, void *), void *arg);

/*
 * Two kinds of "real" function. OpenSSL's own (ctx_new, ...) come from libssl.so.3 itself, by handle and
 * version: whatever RTLD_NEXT finds first may be another library's function of the same name (GnuTLS's
 * OpenSSL compatibility layer, libgnutls-openssl.so.27, defines SSL_CTX_new unversioned, and glibc's dlvsym
 * accepts an unversioned definition for any version). The program's own (own_ctx_new, ...) are what its call
 * would have reached without this module; a call that is not OpenSSL's (a method object outside libssl) goes
 * there untouched, and POSH is installed on nothing: such a process runs exactly as without the shim.
 */
static struct {
    ctx_new_fn ctx_new, own_ctx_new;
    ctx_new_ex_fn ctx_new_ex, own_ctx_new_ex;
    set_cert_verify_fn set_cert_verify;
    int set_cert_verify_foreign;                /* the program's is another library's: passed through untouched */
    void *base_ssl, *base_crypto, *base_self;  /* load addresses of libssl, libcrypto and this module */
    int program_ssl_is_openssl;                 /* the process's SSL_CTX_new is libssl.so.3's */
} real;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void *libssl_handle, *libcrypto_handle;

/*
 * OpenSSL's definition of name, from the library that must define it (never from another library); without a
 * version (libc's write, close, ... for stream.c), the next definition after this module.
 */
void *shim_resolve(const char *name, const char *version, void *self)
{
    void *lib = strncmp(name, "SSL_", 4) == 0 ? libssl_handle : libcrypto_handle;
    void *f;
    if (version == NULL)
        f = dlsym(RTLD_NEXT, name);
    else
        f = lib != NULL ? dlvsym(lib, name, version) : NULL;
    return f == self ? NULL : f;
}

/* What the program's own call of name reaches without this module (NULL if nothing, or this module). */
void *shim_resolve_own(const char *name, void *self)
{
    void *f = dlsym(RTLD_NEXT, name);
    return f == self ? NULL : f;
}

/*
 * For a hook on one of OpenSSL's functions: OpenSSL's (libssl.so.3's or libcrypto.so.3's) as the program's own
 * call would reach it, or, when that call reaches another library's function of the name (GnuTLS's OpenSSL
 * compatibility layer), that one, with *foreign set: the hook must then only pass the call through, since the
 * objects it gets are not OpenSSL's.
 */
void *shim_resolve_openssl_or_own(const char *name, void *self, int *foreign)
{
    void *ours = shim_resolve(name, OPENSSL_VERSION_NODE, self), *own = shim_resolve_own(name, self);
    if (own != NULL && own != ours) {
        *foreign = 1;
        return own;
    }
    return ours;
}

static void *module_base(const void *addr)
{
    Dl_info info;
    return addr != NULL && dladdr(addr, &info) != 0 ? info.dli_fbase : NULL;
}

/* ---- does the program itself link libssl.so.3? (said once at start-up: wget, git, a static OpenSSL) ---- */

#define MAX_SCAN_OBJECTS 256

typedef struct loaded {
    const char *path;         /* as the loader names it ("" for the program) */
    const ElfW(Dyn) *dyn;
    ElfW(Addr) base;
} loaded;

typedef struct scan {
    loaded obj[MAX_SCAN_OBJECTS];
    size_t n;
} scan;

static int collect(struct dl_phdr_info *info, size_t size, void *arg)
{
    scan *sc = arg;
    for (int i = 0; i < info->dlpi_phnum && sc->n < MAX_SCAN_OBJECTS; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
            sc->obj[sc->n].path = info->dlpi_name != NULL ? info->dlpi_name : "";
            sc->obj[sc->n].dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
            sc->obj[sc->n].base = info->dlpi_addr;
            sc->n++;
        }
    }
    return 0;
}

/* The object's string table (the loader relocated DT_STRTAB in place; some ports do not: both are handled). */
static const char *dyn_strtab(const loaded *o)
{
    for (const ElfW(Dyn) *d = o->dyn; d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB)
            return (const char *)(d->d_un.d_ptr < o->base ? o->base + d->d_un.d_ptr : d->d_un.d_ptr);
    return NULL;
}

static int same_library(const loaded *o, const char *soname)
{
    const char *base = strrchr(o->path, '/');
    return strcmp(base != NULL ? base + 1 : o->path, soname) == 0;
}

/* TLS libraries other than OpenSSL 3's: a program linking one of them and not libssl.so.3 is not helped. */
static const char *const other_tls[] = {"libgnutls.so", "libnss3.so", "libmbedtls.so", "libwolfssl.so",
                                        "libssl.so.1", "libbearssl.so", "libtls.so"};

/*
 * Which TLS library the program links (DT_NEEDED, transitively from the executable): NULL for OpenSSL's
 * libssl.so.3 or none at all (a program without TLS says nothing), else the other one's name. This module needs
 * libssl.so.3 too, so "loaded" says nothing: only the program's own closure counts.
 */
static const char *program_other_tls(void)
{
    static scan sc;              /* start-up only, once: no 6 KiB on a constructor's stack */
    unsigned char reached[MAX_SCAN_OBJECTS] = {0};
    size_t queue[MAX_SCAN_OBJECTS], head = 0, tail = 0;
    const char *other = NULL;

    dl_iterate_phdr(collect, &sc);
    if (sc.n == 0)
        return NULL; /* nothing to judge by: say nothing */
    reached[0] = 1;
    queue[tail++] = 0;
    while (head < tail) {
        const loaded *o = &sc.obj[queue[head++]];
        const char *strtab = dyn_strtab(o);
        if (strtab == NULL)
            continue;
        for (const ElfW(Dyn) *d = o->dyn; d->d_tag != DT_NULL; d++) {
            const char *needed = strtab + d->d_un.d_val;
            if (d->d_tag != DT_NEEDED)
                continue;
            if (strcmp(needed, "libssl.so.3") == 0)
                return NULL;
            for (size_t k = 0; other == NULL && k < sizeof(other_tls) / sizeof(other_tls[0]); k++)
                if (strncmp(needed, other_tls[k], strlen(other_tls[k])) == 0)
                    other = needed;
            for (size_t k = 1; k < sc.n; k++) {
                if (!reached[k] && same_library(&sc.obj[k], needed)) {
                    reached[k] = 1;
                    queue[tail++] = k;
                }
            }
        }
    }
    return other;
}

/* A static OpenSSL that the executable exports (nodejs.org's Node): its calls never reach this module. */
static int program_has_own_openssl(void)
{
    void *self = dlopen(NULL, RTLD_LAZY | RTLD_NOLOAD);
    void *f = self != NULL ? dlsym(self, "SSL_CTX_new") : NULL;
    Dl_info info, prog;
    int own = f != NULL && dladdr(f, &info) != 0 && dladdr((void *)program_has_own_openssl, &prog) != 0 &&
              info.dli_fbase != prog.dli_fbase && info.dli_fbase != real.base_ssl &&
              (info.dli_fname == NULL || info.dli_fname[0] == '\0' || strstr(info.dli_fname, ".so") == NULL);
    if (self != NULL)
        dlclose(self);
    return own;
}

static int choose_service(SSL *ssl, char *out, size_t outlen);

/* Only symbols and plain memory here: touching OpenSSL or libcurl before the program does changes its setup. */
static void shim_init(void)
{
    const char *other;
    static const posh_shim_hooks hooks = {choose_service, shim_vouch_remember, shim_vouch_forget,
                                          shim_stream_to, shim_vouch_defer, shim_stream_from};
    /*
     * RTLD_NOLOAD: only a library already in the process. This module needs libssl.so.3 itself, so it is
     * always there; the handles only make sure that OpenSSL's functions are OpenSSL's.
     */
    libssl_handle = dlopen("libssl.so.3", RTLD_LAZY | RTLD_NOLOAD);
    libcrypto_handle = dlopen("libcrypto.so.3", RTLD_LAZY | RTLD_NOLOAD);
    real.ctx_new = (ctx_new_fn)shim_resolve("SSL_CTX_new", OPENSSL_VERSION_NODE, (void *)SSL_CTX_new);
    real.own_ctx_new = (ctx_new_fn)shim_resolve_own("SSL_CTX_new", (void *)SSL_CTX_new);
    real.own_ctx_new_ex = (ctx_new_ex_fn)shim_resolve_own("SSL_CTX_new_ex", (void *)SSL_CTX_new_ex);
    real.program_ssl_is_openssl = real.own_ctx_new != NULL && real.own_ctx_new == real.ctx_new;
    real.ctx_new_ex = (ctx_new_ex_fn)shim_resolve("SSL_CTX_new_ex", OPENSSL_VERSION_NODE, (void *)SSL_CTX_new_ex);
    real.set_cert_verify = (set_cert_verify_fn)shim_resolve_openssl_or_own(
        "SSL_CTX_set_cert_verify_callback", (void *)SSL_CTX_set_cert_verify_callback, &real.set_cert_verify_foreign);
    real.base_ssl = module_base((void *)real.ctx_new);
    real.base_crypto = module_base(shim_resolve("X509_check_host", OPENSSL_VERSION_NODE, (void *)X509_check_host));
    real.base_self = module_base((void *)shim_init);
    shim_vouch_init();
    shim_stream_init();
    posh_log_default_off();
    posh_verify_set_shim_hooks(&hooks);
    if (!real.program_ssl_is_openssl)
        posh_log(POSH_LOG_INFO, "this process's SSL_CTX_new is not OpenSSL's libssl.so.3 (GnuTLS's OpenSSL "
                 "compatibility layer?): its TLS contexts are left alone, POSH cannot help them");
    else if ((other = program_other_tls()) != NULL)
        posh_log(POSH_LOG_INFO, "this program links %s, not OpenSSL's libssl.so.3: POSH cannot help it", other);
    else if (program_has_own_openssl())
        posh_log(POSH_LOG_INFO, "this program contains an OpenSSL of its own (static): POSH cannot help it");
}

__attribute__((constructor)) static void shim_constructor(void)
{
    pthread_once(&init_once, shim_init);
}

void shim_ready(void)
{
    pthread_once(&init_once, shim_init);
}

/*
 * Is this return address in the program's own code, as opposed to OpenSSL itself, libposh or this module?
 * OpenSSL calls X509_check_host and X509_get_ext_d2i through the PLT too (check_id, name constraints): those
 * calls must see the certificate exactly as it is. Unknown code (no module) is not answered either.
 */
int shim_caller_is_program(const void *ret)
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

/*
 * Which connections can be XMPP, for the stream records (shim_connect_may_be_xmpp): 0 until the rule is read at
 * the first verification, then POSH_SERVICE names XMPP, names another service (or is invalid), or is unset.
 */
enum { RULE_UNREAD, RULE_XMPP, RULE_OTHER, RULE_BY_PORT };
static atomic_int service_rule;

static void env_service_read(void)
{
    const char *v = posh_getenv("POSH_SERVICE");
    char svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    if (v == NULL) {
        atomic_store(&service_rule, RULE_BY_PORT);
        return;
    }
    if (posh_service_parse(v, svc, proto) != POSH_OK) {
        env_service_state = -1;
        atomic_store(&service_rule, RULE_OTHER);
        posh_log(POSH_LOG_ERROR, "POSH_SERVICE: \"%.100s\" is not a service name ([a-z0-9-]{1,63} or "
                 "_service._proto): POSH is not used", v);
        return;
    }
    snprintf(env_service, sizeof(env_service), "_%s._%s", svc, proto);
    env_service_state = 1;
    atomic_store(&service_rule, posh_service_is_xmpp(env_service) ? RULE_XMPP : RULE_OTHER);
}

/* The TCP or UDP port of an IPv4 or IPv6 address of len bytes, or -1. */
static int port_of(const struct sockaddr *sa, socklen_t len)
{
    if (sa != NULL && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa != NULL && sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1;
}

int shim_connect_may_be_xmpp(const struct sockaddr *addr, socklen_t len)
{
    int port;
    switch (atomic_load(&service_rule)) {
    case RULE_XMPP:
        return 1;
    case RULE_OTHER:
        return 0;
    case RULE_BY_PORT:
        break;
    default:
        return 1; /* not read yet: keep the record, a verification may need it */
    }
    if ((port = port_of(addr, len)) < 0)
        return 0; /* no port: the port map gives such a connection no service */
    for (size_t i = 0; i < sizeof(port_map) / sizeof(port_map[0]); i++)
        if (port_map[i].port == port)
            return strncmp(port_map[i].service, "xmpp-", 5) == 0;
    return 0;
}

/*
 * The service's TCP port, or -1 (no socket: a memory or custom BIO, a Unix socket): the peer's for a client, the
 * local one for a server-side connection (the peer's is ephemeral there).
 */
static int peer_port(SSL *ssl)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = SSL_get_rfd(ssl);
    if (fd < 0)
        fd = SSL_get_wfd(ssl);
    if (fd < 0 || (SSL_is_server(ssl) ? getsockname(fd, (struct sockaddr *)&ss, &len)
                                      : getpeername(fd, (struct sockaddr *)&ss, &len)) != 0)
        return -1;
    return port_of((struct sockaddr *)&ss, len);
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

int shim_choose_service(SSL *ssl, char *out, size_t outlen)
{
    return choose_service(ssl, out, outlen);
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

/*
 * Is meth one of libssl.so.3's method objects? They are all static objects of libssl (OpenSSL 3 offers no way
 * to make another); GnuTLS's compatibility layer allocates its own on the heap.
 */
static int openssl_method(const SSL_METHOD *meth)
{
    return meth != NULL && real.base_ssl != NULL && module_base(meth) == real.base_ssl;
}

SHIM_EXPORT SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth)
{
    SSL_CTX *ctx;
    shim_ready();
    if (!openssl_method(meth) || real.ctx_new == NULL)
        return real.own_ctx_new != NULL ? real.own_ctx_new(meth) : NULL;
    ctx = real.ctx_new(meth);
    install(ctx);
    return ctx;
}

SHIM_EXPORT SSL_CTX *SSL_CTX_new_ex(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth)
{
    SSL_CTX *ctx;
    shim_ready();
    if (!openssl_method(meth) || real.ctx_new_ex == NULL)
        return real.own_ctx_new_ex != NULL ? real.own_ctx_new_ex(libctx, propq, meth) : NULL;
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
    if (real.set_cert_verify_foreign || (cb != NULL && posh_is_cert_verify_callback(cb))) {
        real.set_cert_verify(ctx, cb, arg);
        return;
    }
    if (posh_ctx_chain_cert_verify(ctx, cb, arg)) {
        posh_log(POSH_LOG_DEBUG, "the application's certificate verification callback runs behind POSH");
        return;
    }
    real.set_cert_verify(ctx, cb, arg);
}
