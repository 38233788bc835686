/*
 * shimhs.c - whole TLS 1.3 handshakes of a program that knows nothing of posh, with and without the shim
 * (LD_PRELOAD=libposh-preload.so): what the shim costs a program per handshake, where the handshake section
 * measures the library's one-line API. A child (this program with --shim-handshakes) sets up its own scenario
 * (PKI, nginx publishing foo.example.com's document, a TLS server presenting the provider's certificate on a
 * CPU apart) and makes plain OpenSSL handshakes (SSL_CTX_set_verify PEER, SSL_set1_host, SNI):
 *   f  without the shim, the name matches (xmpp.hosting.example.net): the program as it is;
 *   g  with the shim, the name matches: the shim's tax on an ordinary connection;
 *   h  with the shim, foo.example.com (the name does not match), the cache warm: POSH through the shim.
 * And, with the shim, g and h in pairs inside one process (--shim-handshakes pairs N): one handshake of each,
 * back to back, the order alternating, each timed alone by the client thread's CPU clock, so that h - g (what
 * POSH's warm path costs a program over an ordinary connection, both through the shim) is resolved on the clock.
 * The child prints the client thread's CPU per handshake; the parent alternates f, g, h in rotating order over
 * rounds and reports the median over rounds of each round's ratio, without a verdict: each configuration is a
 * process of its own, and on the development machine two processes of the same configuration differ by up to
 * 15 % (layout, CPU placement), far more than the shim's share. The figure that resolves it is the instruction
 * count of the same children, by callgrind (bench/instructions: bench_counted_shim_handshakes).
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* One plain handshake for host, which must verify (with a name that does not match, only POSH can say so). */
static void plain_handshake(SSL_CTX *ctx, int port, const char *host)
{
    int fd = bench_connect(port);
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1 ||
        SSL_set1_host(ssl, host) != 1)
        bench_fail("shim handshake: SSL setup");
    if (SSL_connect(ssl) != 1 || SSL_get_verify_result(ssl) != X509_V_OK)
        bench_fail("shim handshake %s: %s", host, X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    SSL_free(ssl);
    close(fd);
}

/* The counted handshakes: a function of its own, never inlined, for callgrind's --toggle-collect. */
__attribute__((noinline)) void bench_counted_shim_handshakes(SSL_CTX *ctx, int port, const char *host, int n);
__attribute__((noinline)) void bench_counted_shim_handshakes(SSL_CTX *ctx, int port, const char *host, int n)
{
    for (int i = 0; i < n; i++)
        plain_handshake(ctx, port, host);
}

/* The client CPU of one handshake, in ns. */
static double timed_handshake(SSL_CTX *ctx, int port, const char *host)
{
    int64_t t0 = bench_thread_cpu_ns();
    plain_handshake(ctx, port, host);
    return (double)(bench_thread_cpu_ns() - t0);
}

/* n pairs of a matching-name and a POSH handshake; prints the median and mean of h - g in µs, the mean's 95 %
 * half-interval, and the capacity ratio h/g (CPU of all g over CPU of all h). */
static void shim_pairs(SSL_CTX *ctx, int port, int n)
{
    double *d = bench_xmalloc(sizeof(double) * (size_t)n), sum_g = 0, sum_h = 0, mean = 0, sq = 0;
    for (int i = 0; i < n; i++) {
        double g, h;
        if (i % 2 == 0) {
            g = timed_handshake(ctx, port, SERVICE_HOST);
            h = timed_handshake(ctx, port, SOURCE);
        } else {
            h = timed_handshake(ctx, port, SOURCE);
            g = timed_handshake(ctx, port, SERVICE_HOST);
        }
        sum_g += g;
        sum_h += h;
        mean += d[i] = (h - g) / 1e3;
    }
    mean /= n;
    for (int i = 0; i < n; i++)
        sq += (d[i] - mean) * (d[i] - mean);
    printf("%.3f %.3f %.3f %.5f\n", bench_median(d, (size_t)n), mean, n > 1 ? 1.96 * sqrt(sq / (n - 1) / n) : 0,
           sum_g / sum_h);
    free(d);
}

int bench_shim_handshakes_main(int argc, char **argv)
{
    int n = argc == 2 ? atoi(argv[1]) : 0, posh = argc == 2 && strcmp(argv[0], "posh") == 0;
    int pairs = argc == 2 && strcmp(argv[0], "pairs") == 0;
    const char *host = posh ? SOURCE : SERVICE_HOST;
    bench_env env;
    ts_tls *server;
    SSL_CTX *ctx;
    int64_t t0;

    if (argc != 2 || (!posh && !pairs && strcmp(argv[0], "matches") != 0) || n <= 0 || n > 100000) {
        fprintf(stderr, "usage: posh-bench --shim-handshakes matches|posh|pairs N\n");
        return 2;
    }
    /* The shim is loaded already; nginx, started below, runs without it. */
    unsetenv("LD_PRELOAD");
    setenv("POSH_LOG", "off", 1);
    bench_env_init(&env, true);
    /* The shim's default client is made on its first need, from these. */
    setenv("POSH_CA_FILE", env.ca_file, 1);
    setenv("POSH_CONNECT_TO", env.connect_to, 1);
    setenv("POSH_SERVICE", "xmpp-server", 0); /* the server's port is no service's: name it (unless set) */
    server = bench_server_apart(&env);
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_load_verify_locations(ctx, env.ca_file, NULL) != 1)
        bench_fail("shim handshakes: client context");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* full handshakes only */
    /* Warm: the one lookup that fills the shim's cache, first-use allocations in OpenSSL and posh. */
    for (int i = 0; i < 5; i++) {
        plain_handshake(ctx, ts_tls_port(server), host);
        if (pairs)
            plain_handshake(ctx, ts_tls_port(server), SOURCE);
    }
    if (pairs) {
        shim_pairs(ctx, ts_tls_port(server), n);
    } else {
        t0 = bench_thread_cpu_ns();
        bench_counted_shim_handshakes(ctx, ts_tls_port(server), host, n);
        printf("%.3f\n", (double)(bench_thread_cpu_ns() - t0) / 1e3 / n);
    }
    SSL_CTX_free(ctx);
    ts_tls_stop(server);
    bench_env_fini(&env);
    return 0;
}

/* One child's client CPU per handshake, in µs. */
static double run_child(const char *kind, const char *shim, int n)
{
    char count[32], buf[256];
    double us;
    const char *args[] = {"--shim-handshakes", kind, count, NULL};

    snprintf(count, sizeof(count), "%d", n);
    if (bench_run_self(args, shim, buf, sizeof(buf)) < 0 || sscanf(buf, "%lf", &us) != 1)
        bench_fail("--shim-handshakes %s %s (%s) failed: \"%s\"", kind, count, shim != NULL ? "with the shim" : "plain",
                   buf);
    return us;
}

void bench_shim_handshakes(bool smoke)
{
#ifdef POSH_SHIM_PATH
    enum { F, G, H, CONFIGS };
    static const char *const kind[CONFIGS] = {"matches", "matches", "posh"};
    static const char *const label[CONFIGS] = {"f: no shim, name matches", "g: the shim, name matches",
                                               "h: the shim, POSH warm (name does not match)"};
    const int n = smoke ? 20 : 400, rounds = smoke ? 1 : 9;
    double *cpu[CONFIGS], *gf = bench_xmalloc(sizeof(double) * (size_t)rounds),
                          *hf = bench_xmalloc(sizeof(double) * (size_t)rounds);
    char name[128];

    for (int c = 0; c < CONFIGS; c++)
        cpu[c] = bench_xmalloc(sizeof(double) * (size_t)rounds);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < CONFIGS; k++) {
            int c = (r + k) % CONFIGS; /* rotating order: no configuration always runs first */
            cpu[c][r] = run_child(kind[c], c == F ? NULL : POSH_SHIM_PATH, n);
        }
        gf[r] = cpu[F][r] / cpu[G][r];
        hf[r] = cpu[F][r] / cpu[H][r];
    }
    for (int c = 0; c < CONFIGS; c++) {
        snprintf(name, sizeof(name), "%s: client CPU", label[c]);
        bench_figure("shimhs", name, bench_median(cpu[c], (size_t)rounds), "us/hs", BENCH_INFO, BENCH_NONE, 0);
    }
    bench_figure("shimhs", "client capacity g/f (the shim on a matching name, median of rounds)",
                 bench_median(gf, (size_t)rounds), "", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("shimhs", "client capacity h/f (POSH warm through the shim, median of rounds)",
                 bench_median(hf, (size_t)rounds), "", BENCH_INFO, BENCH_NONE, 0);
    {
        /* h against g in pairs, in one process under the shim: resolved on the clock. */
        char count[32], buf[256];
        double median, mean, half, capacity;
        const char *args[] = {"--shim-handshakes", "pairs", count, NULL};
        const int npairs = smoke ? 20 : 2000;
        snprintf(count, sizeof(count), "%d", npairs);
        if (bench_run_self(args, POSH_SHIM_PATH, buf, sizeof(buf)) < 0 ||
            sscanf(buf, "%lf %lf %lf %lf", &median, &mean, &half, &capacity) != 4)
            bench_fail("--shim-handshakes pairs %s failed: \"%s\"", count, buf);
        snprintf(name, sizeof(name), "h - g, the shim, %d pairs in one process: client CPU, median", npairs);
        bench_figure("shimhs", name, median, "us/hs", BENCH_INFO, BENCH_NONE, 0);
        snprintf(name, sizeof(name), "h - g: client CPU, mean (95%% +/-%.2f)", half);
        bench_figure("shimhs", name, mean, "us/hs", BENCH_INFO, BENCH_NONE, 0);
        bench_figure("shimhs", "client capacity h/g, pairs (CPU of all g / all h)", capacity, "", BENCH_MEASURED,
                     BENCH_GE, 0.99);
    }
    for (int c = 0; c < CONFIGS; c++)
        free(cpu[c]);
    free(gf);
    free(hf);
#else
    (void)smoke;
    bench_note("shimhs: the shim is not built (POSH_SHIM=OFF): section skipped");
#endif
}
