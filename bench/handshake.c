/*
 * handshake.c - full TLS 1.3 handshakes per second against one server presenting one certificate, client
 * configurations in interleaved rounds: (a) plain PKIX with a matching name, (b) POSH with a warm cache (the name
 * does not match, POSH vouches), (c) OpenSSL's DANE-EE pin of the same leaf, and for context (d) POSH in mode
 * pin, which like DANE-EE lets the match stand in for chain trust. No resumption on any of them.
 *
 * Fairness on a small machine: the server runs in this process (a thread per connection, as in the tests) on one
 * CPU and the client on another, the configurations alternate in rotating order within every round, and each
 * verdict is on the median over rounds of that round's ratio, so that a slow phase of the machine hits every
 * configuration alike. Two rates are judged:
 * the wall-clock rate of the client-server pair, and the client's own capacity (handshakes per CPU-second of the
 * client thread), which leaves out the server's share of the machine. Rounds of 120 resolve a few per cent;
 * the few microseconds POSH adds to a warm handshake need pairs: one handshake of each configuration back to
 * back, each timed alone by the client thread's CPU clock, the order alternating, thousands of pairs, and the
 * median and mean of the pair differences (measure_pairs). A control pair of a against a shows the method's
 * own bias. bench_handshake_nonblocking() measures the same b/a with a non-blocking POSH context, for the
 * nonblock section.
 */
#include "bench.h"
#include "client_internal.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* e is measured in pairs only (the tax POSH puts on a name that matches): the rounds compare a to d. */
enum { CFG_PKIX, CFG_POSH, CFG_DANE, CFG_PIN, CFG_ROUNDS, CFG_POSH_PKIX = CFG_ROUNDS, CFG_COUNT };

static const char *const cfg_label[CFG_COUNT] = {
    "a: plain PKIX, name matches",
    "b: POSH, warm cache, name does not match",
    "c: DANE-EE 3 0 1 pin of the leaf",
    "d: POSH mode pin, warm cache",
    "e: POSH on the context, name matches",
};

/*
 * The two steps of a handshake where the configurations differ, timed in every handshake: the certificate
 * verification (the callback OpenSSL calls: X509_verify_cert, or POSH's own) and SSL_free (POSH's state of the
 * connection). Everything else a handshake does is the same in all four.
 */
typedef struct hs_steps {
    int (*verify)(X509_STORE_CTX *, void *); /* NULL: X509_verify_cert */
    int64_t verify_ns, free_ns;              /* of the configuration's last handshake */
} hs_steps;

typedef struct hs_bench {
    SSL_CTX *ctx[CFG_COUNT];
    hs_steps *steps;             /* [CFG_COUNT] */
    unsigned char leaf_sha256[32];
    int port;
} hs_bench;

static void ssl_fail(const char *what)
{
    unsigned long e = ERR_get_error();
    bench_fail("%s%s%s", what, e ? ": " : "", e ? ERR_error_string(e, NULL) : "");
}

/* The verification step of every configuration, timed (wall clock: a CPU-bound step, judged on medians). */
static int timed_verify(X509_STORE_CTX *xctx, void *arg)
{
    hs_steps *st = arg;
    int64_t t0 = bench_now_ns();
    int ok = st->verify != NULL ? st->verify(xctx, NULL) : X509_verify_cert(xctx);
    st->verify_ns = bench_now_ns() - t0;
    return ok;
}

static SSL_CTX *client_ctx(const bench_env *env, int which, posh_client *client, hs_steps *steps)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_load_verify_locations(ctx, env->ca_file, NULL) != 1)
        ssl_fail("client context");
    /* Every handshake is a full one: no tickets, no client session cache. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((which == CFG_POSH || which == CFG_PIN || which == CFG_POSH_PKIX) &&
        (SSL_CTX_set_posh_client(ctx, client) != 1 || SSL_CTX_set_posh_verify(ctx, "xmpp-server") != 1))
        bench_fail("SSL_CTX_set_posh_verify failed");
    if (which == CFG_DANE) {
        if (SSL_CTX_dane_enable(ctx) <= 0)
            ssl_fail("SSL_CTX_dane_enable");
        /* RFC 7671 section 5.1: a DANE-EE(3) match ignores the names, as Postfix and Exim configure it. */
        SSL_CTX_dane_set_flags(ctx, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    }
    /* Around POSH's callback (as SSL_CTX_set_posh_verify installed it) or X509_verify_cert, DANE's included. */
    steps->verify = which == CFG_POSH || which == CFG_PIN || which == CFG_POSH_PKIX ? posh_cert_verify_callback() : NULL;
    SSL_CTX_set_cert_verify_callback(ctx, timed_verify, steps);
    return ctx;
}

/* One full handshake with configuration which; the outcome is checked, then the connection dropped. */
static void handshake(const hs_bench *b, int which)
{
    int fd = bench_connect(b->port);
    SSL *ssl = SSL_new(b->ctx[which]);
    const char *name = which == CFG_PKIX || which == CFG_POSH_PKIX ? SERVICE_HOST : SOURCE;
    int64_t t0;

    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1)
        ssl_fail("SSL_new");
    if (which == CFG_DANE) {
        /* Also sets the SNI name. DANE-EE(3) Cert(0) SHA2-256(1): the digest of the whole leaf, as POSH's. */
        if (SSL_dane_enable(ssl, SOURCE) <= 0 || SSL_dane_tlsa_add(ssl, 3, 0, 1, b->leaf_sha256, 32) <= 0)
            ssl_fail("DANE");
    } else if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1) {
        ssl_fail("host name");
    }
    if (SSL_connect(ssl) != 1) {
        if (SSL_get_verify_result(ssl) != X509_V_OK)
            bench_fail("%s: %s", cfg_label[which], X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        ssl_fail(cfg_label[which]);
    }
    if (SSL_get_verify_result(ssl) != X509_V_OK)
        bench_fail("%s: verify result %ld", cfg_label[which], SSL_get_verify_result(ssl));
    if ((which == CFG_POSH || which == CFG_PIN) && SSL_get_posh_status(ssl) != POSH_STATUS_ACCEPTED)
        bench_fail("%s: not accepted by POSH: %s", cfg_label[which], SSL_get_posh_message(ssl));
    if (which == CFG_POSH_PKIX && SSL_get_posh_status(ssl) != POSH_STATUS_PKIX)
        bench_fail("%s: not PKIX: %s", cfg_label[which], SSL_get_posh_message(ssl));
    if (which == CFG_DANE && SSL_get0_dane_authority(ssl, NULL, NULL) != 0)
        bench_fail("%s: the pin did not decide", cfg_label[which]);
    t0 = bench_now_ns();
    SSL_free(ssl);
    b->steps[which].free_ns = bench_now_ns() - t0;
    close(fd);
}

/*
 * Give the server's threads (created from the acceptor, which inherits the calling thread's CPU set) one CPU and
 * the client the other, so that neither migrates nor steals the other's core. Returns the CPU set to restore.
 */
static ts_tls *start_server_apart(const bench_env *env, cpu_set_t *saved)
{
    cpu_set_t server_cpu, client_cpu;
    int first = -1, second = -1;
    ts_tls *server;

    if (pthread_getaffinity_np(pthread_self(), sizeof(*saved), saved) != 0)
        CPU_ZERO(saved);
    for (int i = 0; i < CPU_SETSIZE && second < 0; i++)
        if (CPU_ISSET(i, saved)) {
            if (first < 0)
                first = i;
            else
                second = i;
        }
    if (second >= 0) {
        CPU_ZERO(&server_cpu);
        CPU_SET(second, &server_cpu);
        pthread_setaffinity_np(pthread_self(), sizeof(server_cpu), &server_cpu);
    }
    server = ts_tls_start(ts_cert_x509(env->svc), NULL, ts_cert_key(env->svc));
    BENCH_CHECK(server != NULL, "TLS server");
    if (second >= 0) {
        CPU_ZERO(&client_cpu);
        CPU_SET(first, &client_cpu);
        pthread_setaffinity_np(pthread_self(), sizeof(client_cpu), &client_cpu);
    }
    return server;
}

ts_tls *bench_server_apart(const bench_env *env)
{
    cpu_set_t saved;
    return start_server_apart(env, &saved);
}

/* Median over rounds of num[r] / den[r]. */
static double median_ratio(const double *num, const double *den, int rounds)
{
    double *v = bench_xmalloc(sizeof(double) * (size_t)rounds), m;
    for (int r = 0; r < rounds; r++)
        v[r] = num[r] / den[r];
    m = bench_median(v, (size_t)rounds);
    free(v);
    return m;
}

/*
 * What DANE-EE(3) leaves out and PKIX cannot: the CA's signature on the leaf. The median time of one such check
 * (X509_verify with the CA's P-256 key), measured here so that the b/c gap can be read against it.
 */
static double leaf_signature_us(const bench_env *env, int n)
{
    double *v = bench_xmalloc(sizeof(double) * (size_t)n), m;
    X509 *leaf = ts_cert_x509(env->svc);
    EVP_PKEY *ca_key = X509_get0_pubkey(ts_ca_x509(env->ca));

    for (int i = 0; i < n; i++) {
        int64_t t0 = bench_now_ns();
        if (X509_verify(leaf, ca_key) != 1)
            ssl_fail("X509_verify of the leaf");
        v[i] = (double)(bench_now_ns() - t0) / 1000.0;
    }
    m = bench_median(v, (size_t)n);
    free(v);
    return m;
}

/*
 * rounds rounds of per_round handshakes with each of the n configurations cfgs[], the configurations in rotating
 * order within every round: time per handshake, wall clock in wall[c][r], client thread CPU in cpu[c][r] (ns).
 */
static void measure_rounds(const hs_bench *b, const int *cfgs, int n, int rounds, int per_round, double **wall,
                           double **cpu)
{
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < n; k++) {
            int c = cfgs[(r + k) % n]; /* rotate which configuration goes first */
            int64_t t0 = bench_now_ns(), c0 = bench_thread_cpu_ns();
            for (int i = 0; i < per_round; i++)
                handshake(b, c);
            wall[c][r] = (double)(bench_now_ns() - t0) / per_round;
            cpu[c][r] = (double)(bench_thread_cpu_ns() - c0) / per_round;
        }
    }
}

/* Per handshake of a paired run, for x ([0]) and y ([1]): client CPU, and the two steps that differ (ns). */
typedef struct pair_run {
    double *cpu[2], *steps[2];
    int pairs;
} pair_run;

static pair_run pair_run_new(int pairs)
{
    pair_run p = {.pairs = pairs};
    for (int k = 0; k < 2; k++) {
        p.cpu[k] = bench_xmalloc(sizeof(double) * (size_t)pairs);
        p.steps[k] = bench_xmalloc(sizeof(double) * (size_t)pairs);
    }
    return p;
}

static void pair_run_free(pair_run *p)
{
    for (int k = 0; k < 2; k++) {
        free(p->cpu[k]);
        free(p->steps[k]);
    }
}

/*
 * p->pairs pairs of handshakes, one of x and one of y back to back (x first in even pairs, y first in odd ones),
 * each timed by the client thread's CPU clock, and its verification and SSL_free steps by the wall clock.
 * Neighbouring handshakes share the machine's state of the moment, so a pair's difference cancels the drift and
 * load that move rounds of 120 by tens of microseconds.
 */
static void measure_pairs(const hs_bench *b, int x, int y, pair_run *p)
{
    for (int i = 0; i < p->pairs; i++) {
        int order[2] = {i % 2 == 0 ? x : y, i % 2 == 0 ? y : x};
        for (int j = 0; j < 2; j++) {
            int c = order[j], k = i % 2 == 0 ? j : 1 - j; /* x's slot is 0 (for a - a: first in even pairs) */
            int64_t t0 = bench_thread_cpu_ns();
            handshake(b, c);
            p->cpu[k][i] = (double)(bench_thread_cpu_ns() - t0);
            p->steps[k][i] = (double)(b->steps[c].verify_ns + b->steps[c].free_ns);
        }
    }
}

/* Median, mean and the mean's 95 % interval of the differences x[i] - y[i] (ns in, us out). */
static void pair_stats(const double *x, const double *y, int n, double *median, double *mean, double *half)
{
    double *d = bench_xmalloc(sizeof(double) * (size_t)n), sum = 0, sq = 0;
    for (int i = 0; i < n; i++)
        sum += d[i] = (x[i] - y[i]) / 1000.0;
    *mean = sum / n;
    for (int i = 0; i < n; i++)
        sq += (d[i] - *mean) * (d[i] - *mean);
    *half = n > 1 ? 1.96 * sqrt(sq / (n - 1) / n) : 0;
    *median = bench_median(d, (size_t)n);
    free(d);
}

static double sum_of(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}

/*
 * The figures of one paired comparison x - y ("b - a"): the steps that differ (verification and SSL_free), which
 * is where every instruction of the difference is, then the whole handshake's client CPU for confirmation, and
 * the capacity ratio y/x over all the pairs. op/target: the issue 20 target on the steps, and on capacity.
 */
static void report_pairs(const char *what, const pair_run *p, bench_op op, double target, double capacity_target)
{
    double median, mean, half;
    char name[128];

    pair_stats(p->steps[0], p->steps[1], p->pairs, &median, &mean, &half);
    snprintf(name, sizeof(name), "%s: verification + SSL_free, %d pairs: median", what, p->pairs);
    bench_figure("handshake", name, median, "us/hs", op == BENCH_NONE ? BENCH_INFO : BENCH_MEASURED, op, target);
    snprintf(name, sizeof(name), "%s: verification + SSL_free: mean (95%% +/-%.2f)", what, half);
    bench_figure("handshake", name, mean, "us/hs", BENCH_INFO, BENCH_NONE, 0);
    pair_stats(p->cpu[0], p->cpu[1], p->pairs, &median, &mean, &half);
    snprintf(name, sizeof(name), "%s: client CPU of the handshake: median", what);
    bench_figure("handshake", name, median, "us/hs", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "%s: client CPU of the handshake: mean (95%% +/-%.1f)", what, half);
    bench_figure("handshake", name, mean, "us/hs", BENCH_INFO, BENCH_NONE, 0);
    snprintf(name, sizeof(name), "client capacity %c/%c, pairs (CPU of all %c / all %c)", what[0], what[4], what[4],
             what[0]);
    bench_figure("handshake", name, sum_of(p->cpu[1], p->pairs) / sum_of(p->cpu[0], p->pairs), "",
                 capacity_target > 0 ? BENCH_MEASURED : BENCH_INFO, capacity_target > 0 ? BENCH_GE : BENCH_NONE,
                 capacity_target);
}

/*
 * b - a and d - c in pairs (issue 20's targets on b - a and b/a), e - a (what POSH on a context costs a name that
 * matches: the shim puts it on every context), and a - a: the method's own bias.
 */
static void handshake_pairs(const hs_bench *b, int pairs)
{
    pair_run p = pair_run_new(pairs);

    measure_pairs(b, CFG_POSH, CFG_PKIX, &p);
    report_pairs("b - a", &p, BENCH_LE, 3.0, 0.99);
    measure_pairs(b, CFG_PIN, CFG_DANE, &p);
    report_pairs("d - c", &p, BENCH_NONE, 0, 0);
    measure_pairs(b, CFG_POSH_PKIX, CFG_PKIX, &p);
    report_pairs("e - a", &p, BENCH_NONE, 0, 0);
    p.pairs = pairs / 2;
    measure_pairs(b, CFG_PKIX, CFG_PKIX, &p);
    report_pairs("a - a", &p, BENCH_NONE, 0, 0);
    p.pairs = pairs;
    pair_run_free(&p);
}

void bench_handshake(bench_env *env)
{
    static const int all[CFG_ROUNDS] = {CFG_PKIX, CFG_POSH, CFG_DANE, CFG_PIN};
    int rounds = env->smoke ? 3 : 41, per_round = env->smoke ? 10 : 120;
    double *wall[CFG_COUNT], *cpu[CFG_COUNT], *diff;
    posh_client *client = bench_client(env, NULL), *pin = bench_client_mode(env, NULL, POSH_MODE_PIN);
    ts_tls *server;
    cpu_set_t saved;
    hs_steps steps[CFG_COUNT] = {0};
    hs_bench b = {.steps = steps};
    char name[96];

    server = start_server_apart(env, &saved);
    b.port = ts_tls_port(server);
    bench_cert_sha256(env->svc, b.leaf_sha256);
    for (int c = 0; c < CFG_COUNT; c++) {
        b.ctx[c] = client_ctx(env, c, c == CFG_PIN ? pin : client, &steps[c]);
        wall[c] = bench_xmalloc(sizeof(double) * (size_t)rounds);
        cpu[c] = bench_xmalloc(sizeof(double) * (size_t)rounds);
    }
    diff = bench_xmalloc(sizeof(double) * (size_t)rounds);

    /* Warm-up: code paths, the server's thread machinery, and the one POSH lookup per client that fills the cache. */
    for (int i = 0; i < 20; i++)
        for (int c = 0; c < CFG_COUNT; c++)
            handshake(&b, c);

    measure_rounds(&b, all, CFG_ROUNDS, rounds, per_round, wall, cpu);
    bench_note("handshake: %d rounds x %d handshakes x %d configurations, %ld handshakes served", rounds, per_round,
               CFG_ROUNDS, ts_tls_handshakes(server));

    for (int c = 0; c < CFG_ROUNDS; c++) {
        double *v = bench_xmalloc(sizeof(double) * (size_t)rounds);
        memcpy(v, wall[c], sizeof(double) * (size_t)rounds);
        snprintf(name, sizeof(name), "%s: rate", cfg_label[c]);
        bench_figure("handshake", name, 1e9 / bench_median(v, (size_t)rounds), "hs/s", BENCH_INFO, BENCH_NONE, 0);
        memcpy(v, cpu[c], sizeof(double) * (size_t)rounds);
        snprintf(name, sizeof(name), "%s: client CPU", cfg_label[c]);
        bench_figure("handshake", name, bench_median(v, (size_t)rounds) / 1000.0, "us/hs", BENCH_INFO, BENCH_NONE, 0);
        free(v);
    }
    /* A rate ratio is the inverse ratio of times per handshake. */
    bench_figure("handshake", "wall rate b/a (median of round ratios)",
                 median_ratio(wall[CFG_PKIX], wall[CFG_POSH], rounds), "", BENCH_MEASURED, BENCH_GE, 0.97);
    bench_figure("handshake", "wall rate b/c (median of round ratios)",
                 median_ratio(wall[CFG_DANE], wall[CFG_POSH], rounds), "", BENCH_MEASURED, BENCH_GE, 1.0);
    bench_figure("handshake", "client capacity b/a (hs per client CPU-s, median)",
                 median_ratio(cpu[CFG_PKIX], cpu[CFG_POSH], rounds), "", BENCH_MEASURED, BENCH_GE, 0.97);
    bench_figure("handshake", "client capacity b/c (hs per client CPU-s, median)",
                 median_ratio(cpu[CFG_DANE], cpu[CFG_POSH], rounds), "", BENCH_MEASURED, BENCH_GE, 1.0);
    /* Context for b/c: DANE-EE(3) skips the chain, the dates and the names; plain PKIX itself stands here. */
    bench_figure("handshake", "client capacity a/c (plain PKIX vs DANE-EE, median)",
                 median_ratio(cpu[CFG_DANE], cpu[CFG_PKIX], rounds), "", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("handshake", "client capacity d/c (POSH pin vs DANE-EE, median)",
                 median_ratio(cpu[CFG_DANE], cpu[CFG_PIN], rounds), "", BENCH_INFO, BENCH_NONE, 0);
    for (int r = 0; r < rounds; r++)
        diff[r] = cpu[CFG_POSH][r] - cpu[CFG_PKIX][r];
    bench_figure("handshake", "client CPU b - a (median of rounds)", bench_median(diff, (size_t)rounds) / 1000.0,
                 "us/hs", BENCH_INFO, BENCH_NONE, 0);
    for (int r = 0; r < rounds; r++)
        diff[r] = cpu[CFG_POSH][r] - cpu[CFG_DANE][r];
    bench_figure("handshake", "client CPU b - c (median of rounds)", bench_median(diff, (size_t)rounds) / 1000.0,
                 "us/hs", BENCH_INFO, BENCH_NONE, 0);
    for (int r = 0; r < rounds; r++)
        diff[r] = cpu[CFG_PKIX][r] - cpu[CFG_DANE][r];
    bench_figure("handshake", "client CPU a - c (PKIX over DANE-EE)", bench_median(diff, (size_t)rounds) / 1000.0,
                 "us/hs", BENCH_INFO, BENCH_NONE, 0);
    bench_figure("handshake", "of which: CA signature on the leaf (P-256)",
                 leaf_signature_us(env, env->smoke ? 50 : 2000), "us", BENCH_INFO, BENCH_NONE, 0);
    handshake_pairs(&b, env->smoke ? 20 : 3000);

    for (int c = 0; c < CFG_COUNT; c++) {
        SSL_CTX_free(b.ctx[c]);
        free(wall[c]);
        free(cpu[c]);
    }
    free(diff);
    ts_tls_stop(server);
    if (CPU_COUNT(&saved) > 0)
        pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
    posh_client_free(client);
    posh_client_free(pin);
}

void bench_handshake_nonblocking(bench_env *env, double *wall_ratio, double *cpu_ratio)
{
    static const int pair[2] = {CFG_PKIX, CFG_POSH};
    int rounds = env->smoke ? 3 : 41, per_round = env->smoke ? 10 : 120;
    double *wall[CFG_COUNT] = {NULL}, *cpu[CFG_COUNT] = {NULL};
    posh_client *client = bench_client(env, NULL);
    posh_result *r = NULL;
    ts_tls *server;
    cpu_set_t saved;
    hs_steps steps[CFG_COUNT] = {0};
    hs_bench b = {.steps = steps};

    /* The lookup that fills the cache, made up front: a non-blocking handshake would not wait for it here. */
    if (posh_lookup(client, SOURCE, "xmpp-server", &r) != POSH_OK)
        bench_fail("warm non-blocking handshakes: lookup of %s: %s", SOURCE, posh_result_message(r));
    posh_result_free(r);
    server = start_server_apart(env, &saved);
    b.port = ts_tls_port(server);
    for (int k = 0; k < 2; k++) {
        b.ctx[pair[k]] = client_ctx(env, pair[k], client, &steps[pair[k]]);
        wall[pair[k]] = bench_xmalloc(sizeof(double) * (size_t)rounds);
        cpu[pair[k]] = bench_xmalloc(sizeof(double) * (size_t)rounds);
    }
    if (SSL_CTX_set_posh_nonblocking(b.ctx[CFG_POSH], 1) != 1)
        bench_fail("SSL_CTX_set_posh_nonblocking failed");
    /* A handshake that found no cached answer would return WANT_RETRY_VERIFY and fail the run: all are warm. */
    for (int i = 0; i < 20; i++)
        for (int k = 0; k < 2; k++)
            handshake(&b, pair[k]);
    measure_rounds(&b, pair, 2, rounds, per_round, wall, cpu);
    *wall_ratio = median_ratio(wall[CFG_PKIX], wall[CFG_POSH], rounds);
    *cpu_ratio = median_ratio(cpu[CFG_PKIX], cpu[CFG_POSH], rounds);
    for (int k = 0; k < 2; k++) {
        SSL_CTX_free(b.ctx[pair[k]]);
        free(wall[pair[k]]);
        free(cpu[pair[k]]);
    }
    ts_tls_stop(server);
    if (CPU_COUNT(&saved) > 0)
        pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
    posh_client_free(client);
}

/*
 * The counted handshakes of --count-handshakes: a function of its own, never inlined, so that callgrind's
 * --toggle-collect counts exactly these calls of this (the client's) thread and nothing of the set-up, the
 * warm-up or the server's threads.
 */
__attribute__((noinline)) void bench_counted_handshakes(const hs_bench *b, int which, int n);
__attribute__((noinline)) void bench_counted_handshakes(const hs_bench *b, int which, int n)
{
    for (int i = 0; i < n; i++)
        handshake(b, which);
    __asm__ volatile("" ::: "memory"); /* keep the call a call */
}

int bench_count_handshakes_main(int argc, char **argv)
{
    static const char letters[CFG_COUNT + 1] = "abcde";
    const char *p = argc == 2 && strlen(argv[0]) == 1 ? strchr(letters, argv[0][0]) : NULL;
    int n = argc == 2 ? atoi(argv[1]) : 0;
    posh_client *client;
    bench_env env;
    ts_tls *server;
    cpu_set_t saved;
    hs_steps steps[CFG_COUNT] = {0};
    hs_bench b = {.steps = steps};
    int which;

    if (p == NULL || *p == '\0' || n <= 0 || n > 100000) {
        fprintf(stderr, "usage: posh-bench --count-handshakes a|b|c|d|e N\n");
        return 2;
    }
    which = (int)(p - letters);
    bench_env_init(&env, true);
    client = bench_client_mode(&env, NULL, which == CFG_PIN ? POSH_MODE_PIN : POSH_MODE_NAME);
    server = start_server_apart(&env, &saved);
    b.port = ts_tls_port(server);
    bench_cert_sha256(env.svc, b.leaf_sha256);
    b.ctx[which] = client_ctx(&env, which, client, &steps[which]);
    /* Warm: the one lookup that fills the cache, first-use allocations inside OpenSSL and posh. */
    for (int i = 0; i < 5; i++)
        handshake(&b, which);
    bench_counted_handshakes(&b, which, n);
    printf("%s\t%d\n", cfg_label[which], n);
    SSL_CTX_free(b.ctx[which]);
    ts_tls_stop(server);
    posh_client_free(client);
    bench_env_fini(&env);
    return 0;
}
