/*
 * programs.h - what the tests of real, unmodified programs share (test_shim, test_clients): running a program
 * with or without the shim against the fixture, and the small HTTPS server those programs fetch a body from.
 */
#ifndef POSH_TEST_PROGRAMS_H
#define POSH_TEST_PROGRAMS_H

#include "fixture.h"

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

#endif
