/*
 * cli.c - helpers shared by the subcommands: messages, number parsing, error names, JSON output and the
 * client configured from the environment, the body of the one-lookup commands.
 */
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void vmessage(const char *cmd, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Messages carry what servers sent (a Location header, a STARTTLS reply, curl's error text): control bytes are
 * shown as '?' so that no server can drive the operator's terminal. The library's own messages arrive escaped
 * as \xHH already (printable, so untouched here); this catches what the command reads itself.
 */
static void vmessage(const char *cmd, const char *fmt, va_list ap)
{
    char msg[2048];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    cli_sanitize(msg);
    fprintf(stderr, "posh%s%s: %s\n", cmd != NULL ? " " : "", cmd != NULL ? cmd : "", msg);
}

char *cli_sanitize(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return s;
}

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(cmd, fmt, ap);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'posh%s%s --help'.\n", cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
    return CLI_USAGE;
}

int cli_option_error(const char *cmd, int c, char **argv)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";

    if (c == ':')
        return cli_usage_error(cmd, "option '%s' needs a value", arg);
    if (strncmp(arg, "--", 2) == 0 || optopt == 0)
        return cli_usage_error(cmd, "unknown option '%s'", arg);
    return cli_usage_error(cmd, "unknown option '-%c'", optopt);
}

int cli_parse_long(const char *s, long min, long max, long *out)
{
    long v = 0;

    if (s == NULL || *s == '\0' || strlen(s) > 18)
        return -1;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (LONG_MAX - (*p - '0')) / 10)
            return -1; /* not a digit, or beyond long (32-bit long included) */
        v = v * 10 + (*p - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A switch over every code, so that -Wswitch-enum reports a code added to posh.h and missing here. */
const char *cli_err_name(posh_err err)
{
    switch (err) {
    case POSH_OK: return "POSH_OK";
    case POSH_ERR_NOMEM: return "POSH_ERR_NOMEM";
    case POSH_ERR_INVALID_ARGUMENT: return "POSH_ERR_INVALID_ARGUMENT";
    case POSH_ERR_CONFIG: return "POSH_ERR_CONFIG";
    case POSH_ERR_BAD_DOMAIN: return "POSH_ERR_BAD_DOMAIN";
    case POSH_ERR_BAD_SERVICE: return "POSH_ERR_BAD_SERVICE";
    case POSH_ERR_NO_POSH: return "POSH_ERR_NO_POSH";
    case POSH_ERR_HTTP_STATUS: return "POSH_ERR_HTTP_STATUS";
    case POSH_ERR_CONNECT: return "POSH_ERR_CONNECT";
    case POSH_ERR_TLS: return "POSH_ERR_TLS";
    case POSH_ERR_TIMEOUT: return "POSH_ERR_TIMEOUT";
    case POSH_ERR_TOO_LARGE: return "POSH_ERR_TOO_LARGE";
    case POSH_ERR_REDIRECT_SCHEME: return "POSH_ERR_REDIRECT_SCHEME";
    case POSH_ERR_TOO_MANY_REDIRECTS: return "POSH_ERR_TOO_MANY_REDIRECTS";
    case POSH_ERR_FETCH: return "POSH_ERR_FETCH";
    case POSH_ERR_JSON: return "POSH_ERR_JSON";
    case POSH_ERR_DOCUMENT: return "POSH_ERR_DOCUMENT";
    case POSH_ERR_FINGERPRINT: return "POSH_ERR_FINGERPRINT";
    case POSH_ERR_EXPIRES: return "POSH_ERR_EXPIRES";
    case POSH_ERR_REFERENCE_URL: return "POSH_ERR_REFERENCE_URL";
    case POSH_ERR_REFERENCE_CHAIN: return "POSH_ERR_REFERENCE_CHAIN";
    case POSH_ERR_REFERENCE_TARGET: return "POSH_ERR_REFERENCE_TARGET";
    case POSH_ERR_NO_MATCH: return "POSH_ERR_NO_MATCH";
    case POSH_ERR_NO_REFERENCE_ID: return "POSH_ERR_NO_REFERENCE_ID";
    case POSH_ERR_CERTIFICATE: return "POSH_ERR_CERTIFICATE";
    case POSH_ERR_INTERNAL: return "POSH_ERR_INTERNAL";
    case POSH_ERR_BUSY: return "POSH_ERR_BUSY";
    case POSH_ERR_CANCELLED: return "POSH_ERR_CANCELLED";
    case POSH_ERR_NO_DELEGATION: return "POSH_ERR_NO_DELEGATION";
    }
    return "POSH_ERR_UNKNOWN";
}

json_object *cli_json_error(posh_err err, const char *message)
{
    json_object *o = json_object_new_object();
    if (o == NULL)
        return NULL;
    json_object_object_add(o, "code", json_object_new_int((int)err));
    json_object_object_add(o, "name", json_object_new_string(cli_err_name(err)));
    json_object_object_add(o, "description", json_object_new_string(posh_strerror(err)));
    json_object_object_add(o, "message", json_object_new_string(message != NULL ? message : ""));
    return o;
}

json_object *cli_json_requests(const posh_result *r)
{
    json_object *arr = json_object_new_array();
    size_t n = r != NULL ? posh_result_request_count(r) : 0;

    for (size_t i = 0; arr != NULL && i < n; i++) {
        const char *url = NULL;
        long status = 0;
        json_object *req = json_object_new_object();
        if (req == NULL || !posh_result_request(r, i, &url, &status)) {
            json_object_put(req);
            continue;
        }
        json_object_object_add(req, "url", json_object_new_string(url != NULL ? url : ""));
        json_object_object_add(req, "status", status > 0 ? json_object_new_int64(status) : NULL);
        json_object_array_add(arr, req);
    }
    return arr;
}

int cli_print_json(json_object *obj)
{
    const char *s;
    int rc = -1;

    if (obj == NULL)
        return -1;
    s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (s != NULL && puts(s) >= 0 && fflush(stdout) == 0)
        rc = 0;
    json_object_put(obj);
    return rc;
}

posh_client *cli_client_from_env(const char *cmd)
{
    posh_config *cfg = posh_config_new();
    posh_client *client = NULL;

    if (cfg == NULL) {
        cli_error(cmd, "out of memory");
        return NULL;
    }
    if (posh_config_load_env(cfg) != POSH_OK)
        cli_error(cmd, "invalid environment: %s", posh_config_error(cfg));
    else if ((client = posh_client_new(cfg)) == NULL)
        cli_error(cmd, "cannot create the POSH client (out of memory)");
    posh_config_free(cfg);
    return client;
}

int cli_cert_fingerprint(X509 *cert, const char *md_name, char *out, size_t outlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD *type = EVP_MD_fetch(NULL, md_name, NULL);
    int ok = type != NULL && X509_digest(cert, type, md, &len) == 1 && outlen >= 4 * ((len + 2) / 3) + 1;

    EVP_MD_free(type);
    if (!ok)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, md, (int)len);
    return 0;
}

int cli_lookup_command(const char *cmd, const char *help, int argc, char **argv, cli_lookup_fn lookup,
                       cli_result_json_fn to_json)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *service = "xmpp-server", *domain, *msg;
    posh_client *client;
    posh_result *res = NULL;
    posh_err err;
    int c, rc;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            service = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(cmd, argc - optind < 1 ? "DOMAIN is required" : "too many arguments");
    domain = argv[optind];

    if ((client = cli_client_from_env(cmd)) == NULL)
        return CLI_USAGE;
    err = lookup(client, domain, service, &res);
    msg = res != NULL ? posh_result_message(res) : "";
    if (msg[0] == '\0')
        msg = posh_strerror(err);

    if (err == POSH_ERR_BAD_DOMAIN || err == POSH_ERR_BAD_SERVICE) {
        rc = cli_usage_error(cmd, "%s: %s", posh_strerror(err), msg);
        goto done;
    }
    rc = CLI_OK;
    if (err != POSH_OK) {
        cli_error(cmd, "%s %s: %s (%s): %s", domain, service, posh_strerror(err), cli_err_name(err), msg);
        rc = CLI_FAIL;
    }
    if (cli_print_json(to_json(domain, service, res, err)) != 0) {
        cli_error(cmd, "cannot write the result to stdout");
        rc = CLI_FAIL;
    }
done:
    posh_result_free(res);
    posh_client_free(client);
    return rc;
}

json_object *cli_json_result_open(const char *domain, const char *service, const posh_result *r)
{
    json_object *o = json_object_new_object();
    if (o == NULL)
        return NULL;
    json_object_object_add(o, "domain", json_object_new_string(r != NULL ? posh_result_domain(r) : domain));
    json_object_object_add(o, "service", json_object_new_string(service));
    json_object_object_add(o, "requests", cli_json_requests(r));
    return o;
}

json_object *cli_json_result_close(json_object *o, const posh_result *r, posh_err err)
{
    const char *msg = r != NULL ? posh_result_message(r) : "";
    json_object_object_add(o, "error",
                           err == POSH_OK ? NULL : cli_json_error(err, msg[0] != '\0' ? msg : posh_strerror(err)));
    return o;
}
