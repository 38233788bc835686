/*
 * cli.h - what the parts of the `posh` command share: exit codes, the subcommands, small helpers for
 * arguments, the POSH client built from the environment, JSON output, and the network code of `posh verify`.
 */
#ifndef POSH_CLI_H
#define POSH_CLI_H

#include <posh.h>

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes, the same for every subcommand (DESIGN.md). */
enum {
    CLI_OK = 0,      /* found / accepted / printed */
    CLI_FAIL = 1,    /* no valid document / rejected / an input file is not a certificate */
    CLI_USAGE = 2    /* bad arguments or environment; for verify also: could not connect or talk to the peer */
};

int cmd_lookup(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_delegation(int argc, char **argv);
int cmd_lint(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

/* ---- cli.c ---- */

/* Print "posh CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Replace control bytes (< 0x20, 0x7f) in s by '?', in place; returns s. Messages print through it. */
char *cli_sanitize(char *s);
/* Print the error, then "Try 'posh CMD --help'." to stderr; returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* After getopt_long returned c ('?' or ':', optstring starting with ':'): the message, CLI_USAGE. */
int cli_option_error(const char *cmd, int c, char **argv);
/* A decimal number in [min, max], digits only (no sign, no space, no leading '+'). 0 ok, -1 not. */
int cli_parse_long(const char *s, long min, long max, long *out);
/* The symbolic name of an error code ("POSH_ERR_NO_POSH"). */
const char *cli_err_name(posh_err err);
/* {"code": n, "name": "...", "description": "...", "message": message} */
json_object *cli_json_error(posh_err err, const char *message);
/* The requests a result rests on: [{"url": ..., "status": n or null when no HTTP response came}, ...]. */
json_object *cli_json_requests(const posh_result *r);
/*
 * A lookup's result object, in two halves around the command's own members: open gives {domain, service,
 * requests} (NULL when out of memory); close adds "error" (null, or the error with the result's message) last.
 */
json_object *cli_json_result_open(const char *domain, const char *service, const posh_result *r);
json_object *cli_json_result_close(json_object *o, const posh_result *r, posh_err err);
/* Print obj (pretty, no escaped slashes) and a newline to stdout; frees obj. -1 if it could not be written. */
int cli_print_json(json_object *obj);
/*
 * A client configured from the POSH_* environment (POSH_CA_FILE, POSH_CONNECT_TO, ...). On an invalid
 * environment: NULL, and the reason (naming the variable) printed for cmd.
 */
posh_client *cli_client_from_env(const char *cmd);

/*
 * The whole of a command that runs one lookup and prints its result (`posh lookup`, `posh delegation`):
 * [-s SERVICE] DOMAIN (SERVICE default xmpp-server), -h prints help; lookup through a client configured from the
 * environment; to_json(domain, service, result, err) printed on stdout; the failure also on stderr. Exit
 * CLI_OK found, CLI_FAIL none / invalid / fetch failed / stdout unwritable, CLI_USAGE usage, bad domain or service,
 * invalid environment.
 */
typedef posh_err (*cli_lookup_fn)(posh_client *client, const char *domain, const char *service, posh_result **out);
typedef json_object *(*cli_result_json_fn)(const char *domain, const char *service, const posh_result *r,
                                           posh_err err);
int cli_lookup_command(const char *cmd, const char *help, int argc, char **argv, cli_lookup_fn lookup,
                       cli_result_json_fn to_json);
/* Standard base64 with padding of the hash (OpenSSL digest name, e.g. "SHA256") of cert's DER into out. */
int cli_cert_fingerprint(X509 *cert, const char *md_name, char *out, size_t outlen);

/* ---- net.c: the connection of `posh verify`, everything under one deadline ---- */

typedef enum cli_proto { STARTTLS_NONE = 0, STARTTLS_XMPP, STARTTLS_SMTP, STARTTLS_IMAP } cli_proto;

/* Milliseconds on a monotonic clock. */
int64_t cli_now_ms(void);
/*
 * Split "HOST:PORT" or "[IPv6]:PORT" into host (hostlen bytes) and port. 0 ok, -1 malformed (why in err).
 */
int cli_split_hostport(const char *in, char *host, size_t hostlen, char *port, size_t portlen, char *err,
                       size_t errlen);
/* A connected non-blocking TCP socket to host:port (every address tried in turn) by deadline; -1 (err says why). */
int cli_connect(const char *host, const char *port, int64_t deadline, char *err, size_t errlen);
/*
 * The plaintext part of STARTTLS for proto, addressed to domain; the socket is then ready for the TLS
 * ClientHello. service chooses the XMPP stream namespace (xmpp-client: jabber:client, else jabber:server).
 * 0 ok, -1 (err says why).
 */
int cli_starttls(int fd, cli_proto proto, const char *domain, const char *service, int64_t deadline, char *err,
                 size_t errlen);
/* Wait until fd is readable (events POLLIN) or writable (POLLOUT) before deadline: 1 ready, 0 timeout, -1 error. */
int cli_wait_fd(int fd, short events, int64_t deadline);

#endif
