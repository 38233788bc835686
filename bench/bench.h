/*
 * bench.h - what the benchmark sections share: the scenario (a throwaway PKI, a real nginx, the provider's
 * certificate), clocks and statistics, and the figures every section reports with its target and verdict.
 * Benchmarks are programs, not tests: a failure to set up or a wrong answer ends the run (bench_fail); a
 * missed target is a figure marked MISS.
 */
#ifndef POSH_BENCH_H
#define POSH_BENCH_H

#include "support.h"

#include <posh.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOURCE "foo.example.com"          /* possession document: the provider's fingerprints */
#define PROVIDER "hosting.example.net"     /* web server of the hosting provider (reference target) */
#define SERVICE_HOST "xmpp.hosting.example.net" /* what the provider's TLS service presents */
#define SINGLE "sf.example.com"           /* the single-flight domain, on the slow server */
#define RFC7711_PATH "/.well-known/posh/xmpp-server.json"
#define PROVIDER_PATH "/posh/xmpp-server.json"

/* ---- the scenario ---- */
typedef struct bench_env {
    bool smoke;               /* seconds-long run, no timing verdicts */
    char *dir;
    ts_ca *ca;
    ts_cert *web;             /* nginx: *.example.com and hosting.example.net */
    ts_cert *svc;             /* the provider's TLS service certificate, vouched for by POSH */
    ts_cert *next;            /* its successor, the second descriptor of every document (roll-over) */
    ts_nginx *nginx;
    char ca_file[512];
    char connect_to[64];      /* "::127.0.0.1:PORT": every host to nginx, as curl --connect-to */
} bench_env;

/* Generate the PKI, publish the documents, start nginx. Fails the run on error. */
void bench_env_init(bench_env *env, bool smoke);
void bench_env_fini(bench_env *env);
/* A fresh client (cold cache, no connections) trusting the test CA; connect_to NULL: env->connect_to. */
posh_client *bench_client(const bench_env *env, const char *connect_to);
/* The same in another mode (POSH_MODE_PIN: a match also stands in for chain trust). */
posh_client *bench_client_mode(const bench_env *env, const char *connect_to, posh_mode mode);
/* A fingerprints document for svc and next (two descriptors, SHA-256). Caller frees. */
char *bench_doc(const bench_env *env, long expires);

/* ---- sections ---- */
void bench_memory(bool smoke);      /* first, before anything else grows the heap */
void bench_handshake(bench_env *env);
void bench_decision(bench_env *env);
void bench_cold_lookup(bench_env *env);
void bench_many_domains(bench_env *env);
void bench_single_flight(bench_env *env);
/* An event loop's timer while N cold lookups go through a slow relay, blocking and non-blocking handshakes. */
void bench_nonblock(bench_env *env);
/*
 * For bench_nonblock: warm POSH handshakes on a context with SSL_CTX_set_posh_nonblocking() against plain PKIX,
 * measured as bench_handshake measures b/a: the medians over rounds of the wall rate and client capacity ratios.
 */
void bench_handshake_nonblocking(bench_env *env, double *wall_ratio, double *cpu_ratio);
void bench_shim_send(bool smoke);           /* the shim's libc hooks in a send-heavy program, with and without */
void bench_shim_recv(bool smoke);           /* the same for the receiving hooks (read, recv) */
/* A loopback TCP connection left open: the dialled end (returned), the accepted end in *accepted; -1 failed. */
int bench_tcp_pair(int *accepted);
/* Both: this program's loop_flag N child timed with and without the shim, 3 kinds of call, in section. */
void bench_shim_loops(const char *section, const char *loop_flag, const char *const kinds[3], bool smoke);
void bench_warm_start(bench_env *env); /* a new process's verdict with an empty or a filled cache directory */
/* Persisting a lookup with an empty cache directory and with 10,000 entries; hashing the trust anchors. */
void bench_store(bench_env *env);
/* The child side of bench_warm_start: --warm-lookup CA CONNECT_TO DIR DER. Returns the exit status. */
int bench_warm_lookup_main(int argc, char **argv);
/* --count-handshakes a|b|c|d|e N: N warm handshakes of one configuration, for bench/instructions (callgrind). */
int bench_count_handshakes_main(int argc, char **argv);
/* The child side of bench_shim_send: --send-loop N. Prints ns per call; returns the exit status. */
int bench_send_loop_main(long n, bool connected);
/* The child side of bench_shim_recv: --recv-loop N [accepted]. Prints ns per call; returns the exit status. */
int bench_recv_loop_main(long n, bool accepted);
/* Whole handshakes of a program that knows nothing of posh, with and without the shim (shimhs.c). */
void bench_shim_handshakes(bool smoke);
/* The child side: --shim-handshakes matches|posh N. Prints the client's CPU per handshake in µs. */
int bench_shim_handshakes_main(int argc, char **argv);
/* The TLS server presenting env->svc, its threads on one CPU and the calling thread on another (handshake.c). */
ts_tls *bench_server_apart(const bench_env *env);

/* ---- figures ---- */
typedef enum bench_kind {
    BENCH_INFO,      /* context for the targets, no verdict */
    BENCH_MEASURED,  /* a timing or memory target: judged in a full run, never in smoke mode */
    BENCH_EXACT      /* a count target (connections, lookups): judged in every mode */
} bench_kind;

typedef enum bench_op { BENCH_NONE, BENCH_GE, BENCH_LE, BENCH_EQ } bench_op;

/* Smoke mode: timing targets are not judged. Set before the first figure. */
void bench_set_smoke(bool smoke);
/* Record a figure. op/target: the target (BENCH_NONE for an informational figure). */
void bench_figure(const char *section, const char *name, double value, const char *unit, bench_kind kind,
                  bench_op op, double target);
/* The table (stdout), then the JSON (stdout, and path if not NULL). Returns the number of MISSes. */
int bench_report(const bench_env *env, const char *json_path);

/* ---- clocks, statistics, failure ---- */
int64_t bench_now_ns(void);
int64_t bench_thread_cpu_ns(void);
/* Sorts v in place; p in [0, 100]: nearest-rank percentile. */
double bench_percentile(double *v, size_t n, double p);
double bench_median(double *v, size_t n);
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Fails the run with ts_error() when cond is false. */
#define BENCH_CHECK(cond, what)                                                                                \
    do {                                                                                                       \
        if (!(cond))                                                                                           \
            bench_fail("%s: %s", (what), ts_error());                                                         \
    } while (0)
void *bench_xmalloc(size_t n);
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Run this program again (/proc/self/exe) with args (NULL-terminated, argv[0] excluded) and LD_PRELOAD set to
 * preload (NULL: unset); its stdout into out (outlen bytes, NUL-terminated). Returns the wall time from fork to
 * exit in ns, or -1 when it could not run or did not exit 0.
 */
int64_t bench_run_self(const char *const args[], const char *preload, char *out, size_t outlen);
/* A TCP connection to 127.0.0.1:port (fails the run on error). */
int bench_connect(int port);
/* SHA-256 of a certificate's DER. */
void bench_cert_sha256(ts_cert *c, unsigned char out[32]);

#endif
