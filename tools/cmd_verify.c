/*
 * cmd_verify.c - `posh verify`: one real TLS handshake to HOST:PORT as a client expecting DOMAIN (SNI and
 * reference identifier), with POSH enabled the way an application enables it, and the verdict: pkix, posh
 * or rejected (and why).
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CMD "verify"
#define DEFAULT_TIMEOUT_S 20L

static const char verify_help[] =
    "usage: posh verify [-s SERVICE] [--cafile F] [--capath D] [--starttls xmpp|smtp|imap] [--json]\n"
    "                   [--timeout S] DOMAIN HOST:PORT\n"
    "\n"
    "Connect to HOST:PORT (a name, an IPv4 address, or [IPv6]), optionally upgrade with STARTTLS, and make a\n"
    "TLS handshake as a client expecting DOMAIN: SNI DOMAIN, SSL_set1_host(DOMAIN), SSL_VERIFY_PEER, and POSH\n"
    "for SERVICE (SSL_CTX_set_posh_verify). Prints one of:\n"
    "  pkix: ...      the certificate carries DOMAIN; POSH was not needed\n"
    "  posh: ...      it does not, and DOMAIN vouches for it over POSH (which descriptor, which URL)\n"
    "  rejected: ...  the verification error, and POSH's reason when POSH took part\n"
    "then a line about the peer's certificate (subject, issuer, SHA-256 fingerprint as POSH publishes it).\n"
    "\n"
    "  -s, --service SERVICE   the POSH service (default xmpp-server)\n"
    "      --cafile F          trust anchors for the peer's chain (PEM); default: the system store\n"
    "      --capath D          an OpenSSL hashed directory of trust anchors\n"
    "      --starttls PROTO    xmpp (stream header to DOMAIN, <starttls/>, <proceed/>), smtp (EHLO, STARTTLS)\n"
    "                          or imap (a1 STARTTLS) before the handshake\n"
    "      --json              print one JSON object instead: domain, service, connect, starttls, result\n"
    "                          (pkix, posh, rejected, error), verify_result {code, message}, posh {status,\n"
    "                          error, message}, peer {subject, issuer, sha-256}, error\n"
    "      --timeout S         seconds for connecting, STARTTLS and the handshake together, 1..3600\n"
    "                          (default 20); the POSH lookup inside the handshake has its own budget,\n"
    "                          POSH_TIMEOUT_MS\n"
    "  -h, --help              this text\n"
    "\n"
    "--cafile/--capath are the trust store for the peer. POSH's own HTTPS fetches follow the POSH_*\n"
    "environment (POSH_CA_FILE, POSH_CONNECT_TO, ...), as for posh lookup.\n"
    "\n"
    "Exit status: 0 accepted (pkix or posh); 1 rejected; 2 usage error, invalid POSH_* environment, or the\n"
    "connection failed (resolve, connect, STARTTLS, a handshake failure other than the verification, timeout).\n";

typedef struct verify_args {
    const char *service, *cafile, *capath, *hostport, *starttls_name;
    char domain[256];
    char host[256], port[8];
    cli_proto starttls;
    int json;
    long timeout_s;
} verify_args;

typedef enum verdict { V_PKIX, V_POSH, V_REJECTED, V_ERROR } verdict;

typedef struct outcome {
    verdict v;
    long verify_result;
    posh_status status;
    posh_err posh_error;
    char posh_message[1024];
    char error[1024];
    char subject[512], issuer[512], sha256[96];
    int have_peer;
} outcome;

static const char *verdict_name(verdict v)
{
    switch (v) {
    case V_PKIX: return "pkix";
    case V_POSH: return "posh";
    case V_REJECTED: return "rejected";
    case V_ERROR: return "error";
    }
    return "error";
}

static const char *status_name(posh_status s)
{
    switch (s) {
    case POSH_STATUS_NONE: return "none";
    case POSH_STATUS_PKIX: return "pkix";
    case POSH_STATUS_ACCEPTED: return "accepted";
    case POSH_STATUS_REJECTED: return "rejected";
    case POSH_STATUS_PENDING: return "pending";
    case POSH_STATUS_DELEGATED: return "delegated";
    }
    return "none";
}

static int parse_args(int argc, char **argv, verify_args *a)
{
    enum { OPT_CAFILE = 256, OPT_CAPATH, OPT_STARTTLS, OPT_JSON, OPT_TIMEOUT };
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'},
        {"cafile", required_argument, NULL, OPT_CAFILE},
        {"capath", required_argument, NULL, OPT_CAPATH},
        {"starttls", required_argument, NULL, OPT_STARTTLS},
        {"json", no_argument, NULL, OPT_JSON},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[256];
    const char *domain;
    size_t dl;
    int c;

    memset(a, 0, sizeof(*a));
    a->service = "xmpp-server";
    a->timeout_s = DEFAULT_TIMEOUT_S;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->service = optarg;
            break;
        case OPT_CAFILE:
            a->cafile = optarg;
            break;
        case OPT_CAPATH:
            a->capath = optarg;
            break;
        case OPT_STARTTLS:
            a->starttls_name = optarg;
            if (strcmp(optarg, "xmpp") == 0)
                a->starttls = STARTTLS_XMPP;
            else if (strcmp(optarg, "smtp") == 0)
                a->starttls = STARTTLS_SMTP;
            else if (strcmp(optarg, "imap") == 0)
                a->starttls = STARTTLS_IMAP;
            else
                return cli_usage_error(CMD, "--starttls '%s': expected xmpp, smtp or imap", optarg);
            break;
        case OPT_JSON:
            a->json = 1;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_long(optarg, 1, 3600, &a->timeout_s) != 0)
                return cli_usage_error(CMD, "--timeout '%s': expected whole seconds from 1 to 3600", optarg);
            break;
        case 'h':
            fputs(verify_help, stdout);
            return -1;
        default:
            return cli_option_error(CMD, c, argv);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(CMD, argc - optind < 2 ? "DOMAIN and HOST:PORT are required" : "too many arguments");
    domain = argv[optind];
    a->hostport = argv[optind + 1];
    /* One trailing dot is allowed (absolute name); SNI and the name check take the name without it. */
    dl = strlen(domain);
    if (dl > 0 && domain[dl - 1] == '.')
        dl--;
    if (dl == 0 || dl >= sizeof(a->domain) || domain[dl - 1] == '.')
        return cli_usage_error(CMD, "DOMAIN '%s' is not a valid DNS name", domain);
    memcpy(a->domain, domain, dl);
    a->domain[dl] = '\0';
    if (cli_split_hostport(a->hostport, a->host, sizeof(a->host), a->port, sizeof(a->port), err, sizeof(err)) != 0)
        return cli_usage_error(CMD, "%s", err);
    return 0;
}

/* The newest OpenSSL error as text, or fallback. Clears the queue. */
static void openssl_error(char *out, size_t outlen, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, out, outlen);
    else
        snprintf(out, outlen, "%s", fallback);
    ERR_clear_error();
}

static SSL_CTX *make_ctx(const verify_args *a, posh_client *client)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char err[256];

    if (ctx == NULL) {
        cli_error(CMD, "cannot create an SSL_CTX");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (a->cafile != NULL || a->capath != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, a->cafile, a->capath) != 1) {
            openssl_error(err, sizeof(err), "unreadable");
            cli_usage_error(CMD, "cannot load the trust anchors %s%s%s: %s", a->cafile ? a->cafile : "",
                            a->cafile && a->capath ? " and " : "", a->capath ? a->capath : "", err);
            goto err;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        openssl_error(err, sizeof(err), "unknown error");
        cli_error(CMD, "cannot load the system trust store: %s", err);
        goto err;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_posh_client(ctx, client) != 1 || SSL_CTX_set_posh_verify(ctx, a->service) != 1) {
        cli_usage_error(CMD, "service '%s' is not a valid POSH service name ([a-z0-9-]{1,63} or _svc._proto)",
                        a->service);
        goto err;
    }
    return ctx;
err:
    SSL_CTX_free(ctx);
    return NULL;
}

/* The handshake on a non-blocking socket, bounded by deadline. 1 done, 0 failed (o->error says why). */
static int handshake(SSL *ssl, int fd, int64_t deadline, outcome *o)
{
    for (;;) {
        int r, e, w;
        errno = 0;
        r = SSL_connect(ssl);
        if (r == 1)
            return 1;
        e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            w = cli_wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (w > 0)
                continue;
            snprintf(o->error, sizeof(o->error), "TLS handshake: %s", w == 0 ? "timed out" : "poll failed");
            return 0;
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            snprintf(o->error, sizeof(o->error), "TLS handshake: %s",
                     errno != 0 ? strerror(errno) : "the server closed the connection");
        } else {
            char s[256];
            openssl_error(s, sizeof(s), "failed");
            snprintf(o->error, sizeof(o->error), "TLS handshake: %s", s);
        }
        return 0;
    }
}

static void name_string(const X509_NAME *name, char *out, size_t outlen)
{
    BIO *b = BIO_new(BIO_s_mem());
    int n;

    out[0] = '\0';
    if (b == NULL)
        return;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 && (n = BIO_read(b, out, (int)outlen - 1)) > 0)
        out[n] = '\0';
    cli_sanitize(out);
    BIO_free(b);
}

/* The peer's leaf: after a failed verification OpenSSL keeps it only in the received chain. */
static void describe_peer(SSL *ssl, outcome *o)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509 *leaf = chain != NULL && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;

    if (leaf == NULL)
        return;
    name_string(X509_get_subject_name(leaf), o->subject, sizeof(o->subject));
    name_string(X509_get_issuer_name(leaf), o->issuer, sizeof(o->issuer));
    if (cli_cert_fingerprint(leaf, "SHA256", o->sha256, sizeof(o->sha256)) != 0)
        o->sha256[0] = '\0';
    o->have_peer = 1;
}

static void decide(SSL *ssl, int connected, outcome *o)
{
    o->verify_result = SSL_get_verify_result(ssl);
    o->status = SSL_get_posh_status(ssl);
    o->posh_error = SSL_get_posh_error(ssl);
    snprintf(o->posh_message, sizeof(o->posh_message), "%s", SSL_get_posh_message(ssl));
    cli_sanitize(o->posh_message);
    describe_peer(ssl, o);
    if (connected && o->verify_result == X509_V_OK)
        o->v = o->status == POSH_STATUS_ACCEPTED ? V_POSH : V_PKIX;
    else if (o->verify_result != X509_V_OK)
        o->v = V_REJECTED;
    else
        o->v = V_ERROR; /* the handshake failed for another reason than the verification */
}

/* 0 written, -1 stdout failed (a full disk, a closed pipe). */
static int print_text(const verify_args *a, const outcome *o)
{
    switch (o->v) {
    case V_PKIX:
    case V_POSH:
        printf("%s: %s\n", verdict_name(o->v), o->posh_message[0] != '\0' ? o->posh_message : a->domain);
        break;
    case V_REJECTED:
        printf("rejected: %s (X.509 error %ld)", X509_verify_cert_error_string(o->verify_result), o->verify_result);
        if (o->status == POSH_STATUS_REJECTED)
            printf(": POSH: %s", o->posh_message);
        else if (o->status == POSH_STATUS_ACCEPTED)
            printf(": POSH vouched for the name (%s), which does not make the chain acceptable", o->posh_message);
        putchar('\n');
        break;
    case V_ERROR:
        return 0;
    }
    if (o->have_peer)
        printf("peer certificate: subject %s, issuer %s, sha-256 %s\n", o->subject, o->issuer, o->sha256);
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

static json_object *string_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? json_object_new_string(s) : NULL;
}

static json_object *outcome_json(const verify_args *a, const outcome *o, int handshake_started)
{
    json_object *j = json_object_new_object(), *x;

    if (j == NULL)
        return NULL;
    json_object_object_add(j, "domain", json_object_new_string(a->domain));
    json_object_object_add(j, "service", json_object_new_string(a->service));
    json_object_object_add(j, "connect", json_object_new_string(a->hostport));
    json_object_object_add(j, "starttls", string_or_null(a->starttls_name));
    json_object_object_add(j, "result", json_object_new_string(verdict_name(o->v)));
    x = NULL;
    if (handshake_started && (x = json_object_new_object()) != NULL) {
        json_object_object_add(x, "code", json_object_new_int64(o->verify_result));
        json_object_object_add(x, "message",
                               json_object_new_string(X509_verify_cert_error_string(o->verify_result)));
    }
    json_object_object_add(j, "verify_result", x);
    x = NULL;
    if (handshake_started && (x = json_object_new_object()) != NULL) {
        json_object_object_add(x, "status", json_object_new_string(status_name(o->status)));
        json_object_object_add(x, "error",
                               o->posh_error == POSH_OK ? NULL : cli_json_error(o->posh_error, o->posh_message));
        json_object_object_add(x, "message", json_object_new_string(o->posh_message));
    }
    json_object_object_add(j, "posh", x);
    x = NULL;
    if (o->have_peer && (x = json_object_new_object()) != NULL) {
        json_object_object_add(x, "subject", json_object_new_string(o->subject));
        json_object_object_add(x, "issuer", json_object_new_string(o->issuer));
        json_object_object_add(x, "sha-256", json_object_new_string(o->sha256));
    }
    json_object_object_add(j, "peer", x);
    json_object_object_add(j, "error", o->v == V_ERROR ? json_object_new_string(o->error) : NULL);
    return j;
}

int cmd_verify(int argc, char **argv)
{
    verify_args a;
    outcome o;
    posh_client *client = NULL;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int fd = -1, rc, connected = 0, handshake_started = 0;
    int64_t deadline;
    char serr[512];

    if ((rc = parse_args(argc, argv, &a)) != 0)
        return rc < 0 ? CLI_OK : rc;
    memset(&o, 0, sizeof(o));
    o.v = V_ERROR;
    rc = CLI_USAGE;
    if ((client = cli_client_from_env(CMD)) == NULL || (ctx = make_ctx(&a, client)) == NULL)
        goto done;
    if ((ssl = SSL_new(ctx)) == NULL) {
        cli_error(CMD, "cannot create an SSL object");
        goto done;
    }
    /* The reference identifier is DOMAIN whatever else is set; this also checks that it is a DNS name. */
    if (SSL_set_posh_reference(ssl, a.domain) != 1) {
        cli_usage_error(CMD, "DOMAIN '%s' is not a valid DNS name (POSH needs a domain, not an address)", a.domain);
        goto done;
    }
    if (SSL_set_tlsext_host_name(ssl, a.domain) != 1 || SSL_set1_host(ssl, a.domain) != 1) {
        ERR_clear_error();
        cli_usage_error(CMD, "DOMAIN '%s' cannot be used as SNI and host name", a.domain);
        goto done;
    }

    deadline = cli_now_ms() + a.timeout_s * 1000;
    if ((fd = cli_connect(a.host, a.port, deadline, o.error, sizeof(o.error))) < 0)
        goto report;
    if (cli_starttls(fd, a.starttls, a.domain, a.service, deadline, serr, sizeof(serr)) != 0) {
        snprintf(o.error, sizeof(o.error), "STARTTLS (%.8s): %s", a.starttls_name, serr);
        goto report;
    }
    if (SSL_set_fd(ssl, fd) != 1) {
        snprintf(o.error, sizeof(o.error), "cannot attach the socket to TLS");
        goto report;
    }
    handshake_started = 1;
    connected = handshake(ssl, fd, deadline, &o);
    decide(ssl, connected, &o);
    if (connected)
        SSL_shutdown(ssl); /* close_notify, once; no waiting for the peer's */

report:
    if (o.v == V_ERROR)
        cli_error(CMD, "%s %s: %s", a.domain, a.hostport, o.error);
    if ((a.json ? cli_print_json(outcome_json(&a, &o, handshake_started && o.v != V_ERROR))
                : print_text(&a, &o)) != 0) {
        cli_error(CMD, "cannot write the result to stdout");
        rc = CLI_FAIL;
        goto done;
    }
    rc = o.v == V_PKIX || o.v == V_POSH ? CLI_OK : o.v == V_REJECTED ? CLI_FAIL : CLI_USAGE;
done:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    posh_client_free(client);
    return rc;
}
