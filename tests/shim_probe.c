/*
 * shim_probe.c - a small OpenSSL client that knows nothing of posh, for the LD_PRELOAD shim's tests
 * (test_shim.c): the shapes of program a preload shim must survive that no Debian tool gives on demand.
 *
 *   posh-shim-probe MODE PORT CAFILE NAME [NAME2]
 *   once       one handshake with SSL_set1_host(NAME) and SNI NAME
 *   threads    8 threads x 4 handshakes on one SSL_CTX
 *   fork       a handshake with NAME, fork, then one with NAME2 in the child and, after it, in the parent
 *   app-cb     the application installs its own certificate verification callback (counts its calls)
 *   app-cb-deny   the same callback, which refuses the chain
 *   ctx-only   create a client SSL_CTX and exit without connecting
 *   own-check  Postfix/Dovecot style: SSL_VERIFY_NONE and SSL_set1_host(NAME), then, after the handshake, the
 *              program's own X509_check_host(NAME) on the peer certificate; prints "verify=N own-check=R"
 * Prints one line per handshake ("accepted" or "rejected verify=N") and exits 0 when every handshake was
 * accepted, 1 otherwise, 2 on usage or connection errors.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define THREADS 8
#define PER_THREAD 4

static int port;
static const char *ca_file;
static atomic_int app_calls;
static int app_deny;

static int app_cert_verify(X509_STORE_CTX *xctx, void *arg)
{
    atomic_fetch_add(&app_calls, 1);
    if (app_deny) {
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return X509_verify_cert(xctx);
}

static SSL_CTX *client_ctx(int app_cb)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        fprintf(stderr, "probe: cannot set up the context\n");
        exit(2);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (app_cb)
        SSL_CTX_set_cert_verify_callback(ctx, app_cert_verify, NULL);
    return ctx;
}

/* One handshake: 1 accepted, 0 rejected. */
static int handshake(SSL_CTX *ctx, const char *name)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    long verify;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ssl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        fprintf(stderr, "probe: cannot connect to 127.0.0.1:%d\n", port);
        exit(2);
    }
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    SSL_set_fd(ssl, fd);
    ok = SSL_connect(ssl) == 1;
    verify = SSL_get_verify_result(ssl);
    if (ok)
        SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    ok = ok && verify == X509_V_OK;
    if (ok)
        printf("accepted %s\n", name);
    else
        printf("rejected %s verify=%ld\n", name, verify);
    fflush(stdout);
    return ok;
}

typedef struct worker {
    pthread_t thread;
    SSL_CTX *ctx;
    const char *name;
    int accepted;
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    for (int i = 0; i < PER_THREAD; i++)
        w->accepted += handshake(w->ctx, w->name);
    return NULL;
}

static int run_threads(const char *name)
{
    worker w[THREADS];
    SSL_CTX *ctx = client_ctx(0);
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.ctx = ctx, .name = name};
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0)
            return 2;
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].accepted;
    }
    SSL_CTX_free(ctx);
    printf("accepted %d/%d\n", total, THREADS * PER_THREAD);
    return total == THREADS * PER_THREAD ? 0 : 1;
}

static int run_fork(const char *name, const char *name2)
{
    SSL_CTX *ctx = client_ctx(0);
    int status = 0, ok;
    pid_t pid;

    if (!handshake(ctx, name))
        return 1;
    fflush(stdout);
    if ((pid = fork()) < 0)
        return 2;
    if (pid == 0) {
        ok = handshake(ctx, name2);
        printf("child %s\n", ok ? "accepted" : "rejected");
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return 2;
    ok = handshake(ctx, name2);
    printf("parent %s\n", ok ? "accepted" : "rejected");
    SSL_CTX_free(ctx);
    return ok && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* Exit 0 when the verification passed and the program's own check says yes, 1 otherwise. */
static int run_own_check(const char *name)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    SSL_CTX *ctx = client_ctx(0);
    SSL *ssl = SSL_new(ctx);
    int fd = socket(AF_INET, SOCK_STREAM, 0), own = -2;
    long verify;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ssl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        return 2;
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1)
        return 2;
    verify = SSL_get_verify_result(ssl);
    if (SSL_get0_peer_certificate(ssl) != NULL)
        own = X509_check_host(SSL_get0_peer_certificate(ssl), name, 0, 0, NULL);
    printf("verify=%ld own-check=%d\n", verify, own);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return verify == X509_V_OK && own == 1 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode;
    SSL_CTX *ctx;
    int ok;

    if (argc < 5) {
        fprintf(stderr, "usage: posh-shim-probe MODE PORT CAFILE NAME [NAME2]\n");
        return 2;
    }
    mode = argv[1];
    port = atoi(argv[2]);
    ca_file = argv[3];
    if (strcmp(mode, "threads") == 0)
        return run_threads(argv[4]);
    if (strcmp(mode, "fork") == 0)
        return argc == 6 ? run_fork(argv[4], argv[5]) : 2;
    if (strcmp(mode, "own-check") == 0)
        return run_own_check(argv[4]);
    if (strcmp(mode, "ctx-only") == 0) {
        SSL_CTX_free(client_ctx(0));
        return 0;
    }
    if (strcmp(mode, "once") != 0 && strcmp(mode, "app-cb") != 0 && strcmp(mode, "app-cb-deny") != 0)
        return 2;
    app_deny = strcmp(mode, "app-cb-deny") == 0;
    ctx = client_ctx(strcmp(mode, "once") != 0);
    ok = handshake(ctx, argv[4]);
    SSL_CTX_free(ctx);
    if (strcmp(mode, "once") != 0)
        printf("app callback calls %d\n", atomic_load(&app_calls));
    return ok ? 0 : 1;
}
