/*
 * programs.h - what the tests of real, unmodified programs share (test_shim, test_clients): running a program
 * with or without the shim against the fixture, and the small HTTPS server those programs fetch a body from.
 */
#ifndef POSH_TEST_PROGRAMS_H
#define POSH_TEST_PROGRAMS_H

#include "fixture.h"

#include <pthread.h>
#include <sys/types.h>

#define RUN_TIMEOUT_MS 40000

typedef struct run_opts {
    int preload;                   /* LD_PRELOAD the shim */
    const char *service;           /* POSH_SERVICE (NULL: unset) */
    const char *const *env;        /* more NAME=VALUE entries, NULL-terminated (may be NULL) */
    const char *input;             /* bytes on stdin (NULL: /dev/null) */
} run_opts;

typedef struct run_result {
    int status;                    /* exit code; 128 + signal; -1 timed out */
    char *out;                     /* stdout and stderr, interleaved */
} run_result;

/*
 * The fixture the programs are pointed at (POSH_CA_FILE, POSH_CONNECT_TO, HOME) and the body the HTTPS server
 * answers with (a line of its own). Call in the suite's setup, before anything else here.
 */
void programs_use(fx *f, const char *http_body);

/* Start argv with a minimal, explicit environment; its output goes to a new file whose path is *out_path. */
pid_t spawn(const char *const argv[], const run_opts *o, char **out_path);
/* Wait for a spawned program (killing its process group after timeout_ms), collect its output, free out_path. */
run_result reap(pid_t pid, char *out_path, int timeout_ms);
/* spawn, then reap within RUN_TIMEOUT_MS. A program that is not installed is a test failure. */
run_result run(const char *const argv[], const run_opts *o);
void run_free(run_result *r);

/* The HTTP response the server sends (the body of programs_use). */
const char *http_response(void);
/* A TLS server on 127.0.0.1 presenting cert that answers one HTTP request per connection. Asserts. */
ts_tls *start_http(ts_cert *cert);

/*
 * A sequential TLS server on 127.0.0.1 (port 0: any) for the plaintext-then-TLS dialogues of mail and XMPP
 * clients: serve(ctx, fd, arg) runs for each accepted connection in turn, on the server's own thread (SIGPIPE
 * blocked), with a 20 s receive timeout on fd; ctx presents cert. Asserts on failure.
 */
typedef void (*seq_serve_fn)(SSL_CTX *ctx, int fd, void *arg);

typedef struct seq_server {
    SSL_CTX *ctx;
    int lfd, port;
    int stop_pipe[2];
    pthread_t thread;
    seq_serve_fn serve;
    void *arg;
} seq_server;

seq_server *seq_server_start(ts_cert *cert, int port, seq_serve_fn serve, void *arg);
void seq_server_stop(seq_server *s);
/* One line (up to and with its '\n') from fd in plaintext (ssl NULL) or from ssl: 0 ok, -1 EOF or error. */
int conn_line(int fd, SSL *ssl, char *buf, size_t len);
/* Send s on fd in plaintext (ssl NULL) or on ssl; errors are the client's problem, the test sees them. */
void conn_send(int fd, SSL *ssl, const char *s);

#endif
