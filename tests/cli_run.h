/*
 * cli_run.h - what the test_cli sources share: the `posh` command (POSH_CLI_PATH) run as a child process with
 * its stdout and stderr captured and its run bounded in time, JSON output read back, and the fixture's pieces
 * each CLI test needs (a TLS server, certificate files, fingerprints).
 *
 * Thread contract: none. Each Criterion test runs in its own process, on one thread; the helpers returning a
 * string in a static buffer say how many calls it survives. Every helper asserts (cr_assert) on failure, so a
 * caller never sees an error value.
 */
#ifndef POSH_TEST_CLI_RUN_H
#define POSH_TEST_CLI_RUN_H

#include "fixture.h"

#include <criterion/criterion.h>
#include <json-c/json.h>

/* How long one run of posh may take before it is killed and the test fails. */
#define CLI_RUN_DEADLINE_MS 60000
/* The most bytes posh may write to stdout or to stderr; more fails the test. */
#define CLI_RUN_OUTPUT_CAP (1 << 20)

/* A finished run of posh. */
typedef struct cli_run {
    int code;  /* exit status (a death by signal fails the test instead) */
    char *out; /* stdout, NUL-terminated; empty when it went to a file */
    char *err; /* stderr, NUL-terminated */
    long ms;   /* wall time from spawn to exit */
} cli_run;

/* Where the child's standard streams come from and go to; a NULL member (or NULL options) is the default. */
typedef struct cli_run_opts {
    const char *stdin_path;  /* opened read-only as stdin (default /dev/null) */
    const char *stdout_path; /* opened write-only as stdout instead of capturing it (e.g. /dev/full) */
} cli_run_opts;

/* Run posh with args (NULL-terminated, argv[0] excluded; at most 78) and wait for it, at most
 * CLI_RUN_DEADLINE_MS. The caller frees the result with cli_run_free. */
cli_run cli_run_posh(const cli_run_opts *opts, const char *const *args);
void cli_run_free(cli_run *r);

/* posh with the arguments given, default streams: POSH("lookup", FOO). */
#define POSH(...) cli_run_posh(NULL, (const char *const[]){__VA_ARGS__, NULL})
/* The same with stdout going to the file path: POSH_TO("/dev/full", "lookup", FOO). */
#define POSH_TO(path, ...)                                                                                     \
    cli_run_posh(&(cli_run_opts){.stdout_path = (path)}, (const char *const[]){__VA_ARGS__, NULL})

/* Expect r's exit status to be want, showing its output when it differs. */
#define expect_code(r, want)                                                                                   \
    cr_expect_eq((r).code, (want), "exit %d, want %d\nstdout: %s\nstderr: %s", (r).code, (want), (r).out, (r).err)

/* A command line posh must refuse as a usage error, and what its stderr must say. */
typedef struct cli_usage_case {
    const char *args[8]; /* NULL-terminated (the unused tail is NULL) */
    const char *err;
} cli_usage_case;

/* Run each of the n cases and expect exit 2, the case's err on stderr, nothing on stdout and, when help is not
 * NULL, help on stderr too (the pointer at --help, e.g. "posh lookup --help"). Failures name the case's index. */
void cli_expect_usage_errors(const cli_usage_case *cases, size_t n, const char *help);

/* The usage errors of a command taking [-s SERVICE] DOMAIN (posh lookup, posh delegation): the same table for
 * each, with cmd as the first argument and "posh CMD --help" as the pointer. */
void cli_expect_domain_usage_errors(const char *cmd);

/* CLOCK_MONOTONIC in milliseconds. */
long cli_now_ms(void);

/* ---- JSON output ---- */

/* s parsed as a JSON object (asserts it is one). The caller puts it. */
json_object *cli_parse_json(const char *s);
/* o's member key (asserts it is there). Borrowed from o. */
json_object *cli_member(json_object *o, const char *key);
/* o's member key as a string (asserts it is one). Borrowed from o. */
const char *cli_member_str(json_object *o, const char *key);
int cli_starts_with(const char *s, const char *prefix);

/* ---- the fixture's pieces ---- */

/* fx_init, fx_start and fx_export_env, with the POSH_* variables a test might inherit that change the output
 * (POSH_LOG, POSH_FORMATS, POSH_MAX_TTL) unset. */
void cli_fixture_setup(fx *f);
/* Stop *server (if any; then NULL), unset POSH_FORMATS, fx_fini. */
void cli_fixture_teardown(fx *f, ts_tls **server);

/* Stop *server if one runs, then start a TLS server on 127.0.0.1 presenting cert into *server. */
void cli_serve(ts_tls **server, ts_cert *cert);
/* "127.0.0.1:PORT" of server, in a static buffer (valid until the next call). */
const char *cli_server_addr(ts_tls *server);
/* Write dir/name.crt (leaf, then intermediates) and dir/name.key for c; returns the .crt path, in one of four
 * static buffers used in turn (so four paths may be live at once). */
const char *cli_cert_file(ts_cert *c, const char *dir, const char *name);
/* The standard base64 of c's fingerprint with hash ("sha-256", "sha-1"). Caller frees. */
char *cli_fingerprint(ts_cert *c, const char *hash);

#endif
