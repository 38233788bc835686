/*
 * dlclose_probe.c - libposh as a plug-in: loaded with dlopen(), used, then dlclose()d while the program's OpenSSL
 * objects and threads live on, for test_lifetime. It links OpenSSL, not libposh: it opens the library given as
 * its first argument, installs POSH on a context with the one line (the default client, configured from the
 * POSH_* environment), and on a thread of its own makes two handshakes with 127.0.0.1:PORT for foo.example.com,
 * whose certificate carries another name (the first one fetches, the second is warm: the thread now keeps its
 * last answer, dropped by a destructor of libposh's when the thread ends). Then, in this order: dlclose(), the
 * context freed (its POSH state is freed by libposh's ex_data callback), the thread ended (libposh's pthread key
 * destructor), and a clean exit (libposh's exit handlers). libposh is linked -z nodelete so that all of this still
 * finds its code: without the flag, dlclose() unmaps it and the first of them jumps into nothing.
 *
 * Usage: posh-dlclose-probe LIBPOSH CA_FILE PORT. Prints one line per accepted handshake; exit 0 when both were
 * accepted by POSH and every step returned.
 */
#include <posh.h> /* the constants only: the functions come from dlsym() */

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#define FOO "foo.example.com"

typedef int (*set_posh_verify_fn)(SSL_CTX *, const char *);
typedef posh_status (*get_posh_status_fn)(const SSL *);

static SSL_CTX *ctx;
static int port;
static get_posh_status_fn get_status;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int stage; /* 1: the thread made its handshakes; 2: the library is closed, the thread may end */
static int accepted;

static void set_stage(int s)
{
    pthread_mutex_lock(&lock);
    stage = s;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void wait_stage(int s)
{
    pthread_mutex_lock(&lock);
    while (stage < s)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
}

/* One handshake for FOO: 1 when it verified and POSH vouched for it. */
static int handshake(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    SSL *ssl = NULL;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || (ssl = SSL_new(ctx)) == NULL ||
        !SSL_set_tlsext_host_name(ssl, FOO) || !SSL_set1_host(ssl, FOO) || !SSL_set_fd(ssl, fd))
        goto done;
    ok = SSL_connect(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK &&
         get_status(ssl) == POSH_STATUS_ACCEPTED;
    if (ok)
        printf("accepted by POSH\n");
    else
        fprintf(stderr, "dlclose_probe: handshake not accepted by POSH (status %d)\n", (int)get_status(ssl));
    SSL_shutdown(ssl);
done:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return ok;
}

static void *handshakes(void *arg)
{
    (void)arg;
    accepted = handshake() + handshake();
    set_stage(1);
    wait_stage(2);
    return NULL; /* libposh's per-thread destructor runs now, after dlclose() */
}

int main(int argc, char **argv)
{
    void *lib;
    set_posh_verify_fn set_verify;
    pthread_t t;

    setvbuf(stdout, NULL, _IOLBF, 0); /* each step's line is out before the next step, should it crash */
    if (argc != 4 || (port = atoi(argv[3])) <= 0) {
        fprintf(stderr, "usage: posh-dlclose-probe LIBPOSH CA_FILE PORT\n");
        return 2;
    }
    if ((lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL) {
        fprintf(stderr, "dlclose_probe: %s\n", dlerror());
        return 3;
    }
    set_verify = (set_posh_verify_fn)dlsym(lib, "SSL_CTX_set_posh_verify");
    get_status = (get_posh_status_fn)dlsym(lib, "SSL_get_posh_status");
    if (set_verify == NULL || get_status == NULL || (ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1 || set_verify(ctx, "xmpp-server") != 1) {
        fprintf(stderr, "dlclose_probe: cannot set up POSH on a context\n");
        return 4;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (pthread_create(&t, NULL, handshakes, NULL) != 0)
        return 5;
    wait_stage(1);
    if (dlclose(lib) != 0) {
        fprintf(stderr, "dlclose_probe: dlclose: %s\n", dlerror());
        return 6;
    }
    SSL_CTX_free(ctx);
    set_stage(2);
    pthread_join(t, NULL);
    printf("closed, freed, ended\n");
    return accepted == 2 ? 0 : 1;
}
