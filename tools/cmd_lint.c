/*
 * cmd_lint.c - `posh lint`: will the POSH clients out there accept what a domain publishes? Fetches as a lookup
 * does, but sees what the library hides (each hop's status, the Content-Type, which URL layout answered), parses
 * with the library's own parser, and prints one line per finding: an error (posh rejects it) or a warning (posh
 * accepts it, other clients may not).
 */
#include "cli.h"
#include "client_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "lint"

#define EXPIRES_OVER (30L * 86400) /* a month of trust in a certificate that may have been replaced */
#define EXPIRES_UNDER 300L         /* five minutes: a fetch for nearly every connection */
#define FILE_CAP 1048576L          /* the highest POSH_MAX_BYTES: --file reads at most one byte more */
#define SHOWN_URL 300              /* characters of a Location or url shown in a finding */

/* Exit status: the findings' worst severity. A usage error is CLI_USAGE, 2, as in every other command. */
enum { LINT_CLEAN = 0, LINT_WARNINGS = 1, LINT_ERRORS = 2 };

/* What the clients that are stricter than posh in some way are called in the findings. */
#define OTHER_CLIENTS "mod_s2s_auth_posh, Conversations, xmpp-proxy and Gajim"

int cmd_lint(int argc, char **argv); /* also declared in posh.c; belongs in cli.h with the other commands */

static const char lint_help[] =
    "usage: posh lint [-s SERVICE] DOMAIN\n"
    "       posh lint --file DOC.json\n"
    "\n"
    "Check a POSH document for what posh rejects (an error) and for what posh accepts but other POSH clients\n"
    "(the community Prosody module mod_s2s_auth_posh, Conversations, xmpp-proxy, Gajim) may not (a warning).\n"
    "\n"
    "With DOMAIN: fetch its document for SERVICE as `posh lookup` does (the RFC 7711 URL, then the draft-02\n"
    "one; redirects; a reference's target) under the same rules (https on every hop, verified certificates,\n"
    "the POSH_* limits), and judge what a lookup does not show: each redirect's status, the Content-Type, which\n"
    "URL answered. With --file: the document in a file alone (no fetch, no reference target).\n"
    "\n"
    "One line per finding on stdout, then a summary line (\"summary: WHAT: N errors, M warnings (...)\"):\n"
    "  error: ...    posh rejects it: the library's own message, then the error's name (POSH_ERR_...)\n"
    "  warning: ...  posh accepts it, others may not: base64 without padding; a descriptor without sha-256;\n"
    "                only SHA-1 (also a JWK key with only x5t); expires over 30 days or under 5 minutes; a\n"
    "                reference document; only the draft-02 URL answers; a JWK Set; a permanent redirect\n"
    "                (301, 308); a Content-Type that is not JSON\n"
    "Each line names the URL (or file) and the member at fault. Server-sent bytes outside printable ASCII are\n"
    "shown as \\xHH.\n"
    "\n"
    "  -s, --service SERVICE   the service, as RFC 7711 names it (default xmpp-server); the SRV form\n"
    "                          _SERVICE._PROTO is accepted too\n"
    "  -f, --file DOC.json     check this file instead of fetching (\"-\": standard input)\n"
    "  -h, --help              this text\n"
    "\n"
    "The fetches follow POSH_CA_FILE, POSH_CA_PATH, POSH_CONNECT_TO, POSH_TIMEOUT_MS (one budget for them all),\n"
    "POSH_MAX_REDIRECTS and POSH_MAX_BYTES (for --file too). POSH_LAYOUT, POSH_FORMATS and POSH_NO_SHA1 do not\n"
    "apply: lint judges the document for every client (both layouts, both forms).\n"
    "\n"
    "Exit status: 0 no finding; 1 warnings only; 2 errors (posh rejects the document, or none could be\n"
    "fetched), or a usage error, an unreadable file or an invalid POSH_* environment (then stdout is empty\n"
    "and stderr says why).\n";

/* ---- findings ---- */

typedef struct lint {
    long errors, warnings;
    int write_failed;
    /* The fetch rules: the POSH_* environment, as the library reads it (net_from_env). */
    posh_config *cfg;
    struct curl_slist *connect_to;
    int64_t deadline_ms;
    CURL *curl;
} lint;

static void finding(lint *l, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * The one exit of every finding. Its text carries what servers and documents said (a Location, curl's error, a
 * member name in the parser's message: the parser leaves those bytes as they are), so it is escaped the way the
 * library escapes its messages: a terminal never sees a control byte, and "\x1b" is always an escape.
 */
static void finding(lint *l, int error, const char *fmt, ...)
{
    char raw[4096], line[4 * sizeof(raw)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    posh_escape(line, sizeof(line), raw, POSH_ESCAPE_RAW);
    if (printf("%s: %s\n", error ? "error" : "warning", line) < 0)
        l->write_failed = 1;
    if (error)
        l->errors++;
    else
        l->warnings++;
}

/* ---- the fetch rules: the library's own ---- */

/*
 * The library judges the POSH_* environment (posh_config_load_env(): lint refuses exactly what lookup refuses,
 * with the same message) and fetches: lib/fetch.c is compiled in (tools/CMakeLists.txt), so every request is
 * made by the library's code under the library's rules (https on every hop, verified certificates, the body cap,
 * redirects followed by hand and counted, the same errors and messages). Only what a lookup keeps to itself is
 * looked at here: each hop's status (the trace), the Content-Type, which URL answered.
 */
static int net_from_env(lint *l)
{
    char why[POSH_MSG_LEN];

    if ((l->cfg = posh_config_new()) == NULL) {
        cli_error(CMD, "out of memory");
        return -1;
    }
    if (posh_config_load_env(l->cfg) != POSH_OK) {
        cli_error(CMD, "invalid environment: %s", posh_config_error(l->cfg));
        return -1;
    }
    if (posh_connect_to_parse(l->cfg->connect_to, &l->connect_to, why, sizeof(why)) != POSH_OK) {
        cli_error(CMD, "invalid environment: POSH_CONNECT_TO: %s", why);
        return -1;
    }
    return 0;
}

static int handle_setup(lint *l)
{
    if ((l->curl = curl_easy_init()) == NULL)
        return -1;
    return posh_fetch_handle_setup(l->curl, l->cfg, l->connect_to) == POSH_OK ? 0 : -1;
}

/* ---- one fetch ---- */

typedef struct response {
    posh_err err;          /* POSH_OK: a 2xx or 4xx answered (fr) */
    posh_fetch_result fr;  /* status, body, final_url (the URL that answered), content_type */
    char msg[POSH_MSG_LEN];/* why, when err is not POSH_OK: the library's words */
} response;

static void response_clear(response *r)
{
    posh_fetch_result_clear(&r->fr);
    memset(r, 0, sizeof(*r));
}

/* GET url as a lookup does; then judge each redirect on the way (a permanent one is warned about). */
static void fetch(lint *l, const char *url, response *r)
{
    posh_trace trace = {.n = 0};

    memset(r, 0, sizeof(*r));
    r->err = posh_fetch(l->curl, l->cfg, url, l->deadline_ms, &trace, &r->fr, r->msg, sizeof(r->msg));
    for (size_t i = 0; i < trace.n; i++) {
        long status = trace.req[i].status;
        if (status == 301 || status == 308)
            finding(l, 0,
                    "%s: HTTP %ld, a permanent redirect%s%.*s%s: clients and HTTP caches may keep it for good; "
                    "RFC 7711 asks for a temporary one (302 or 307)",
                    trace.req[i].url, status, i + 1 < trace.n ? " (to " : "", SHOWN_URL,
                    i + 1 < trace.n ? trace.req[i + 1].url : "", i + 1 < trace.n ? ")" : "");
        free(trace.req[i].url);
    }
}

/* A JSON media type: application/json, or application/SOMETHING+json (RFC 6839); parameters ignored. */
static int content_type_is_json(const char *ct)
{
    size_t n;

    ct += strspn(ct, " \t");
    n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static void check_content_type(lint *l, const response *r)
{
    if (r->fr.content_type == NULL)
        finding(l, 0, "%s: no Content-Type: clients that check it expect JSON (application/json) and may refuse "
                      "the document",
                r->fr.final_url);
    else if (!content_type_is_json(r->fr.content_type))
        finding(l, 0,
                "%s: Content-Type \"%.100s\" is not JSON (application/json or a +json type): clients that check "
                "it may refuse the document",
                r->fr.final_url, r->fr.content_type);
}

/* ---- one document ---- */

typedef enum doc_role {
    DOC_FILE,    /* --file: no fetch, no target */
    DOC_SOURCE,  /* the source domain's: may be a reference */
    DOC_TARGET   /* a reference's target: a reference here is the caller's error to report */
} doc_role;

/* "sha-1, sha-512": the hashes posh read in d, or "no hash posh knows". */
static void hash_list(const posh_descriptor *d, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (int h = 0; h < POSH_HASH_COUNT; h++) {
        int n;
        if (!(d->present & (1u << h)))
            continue;
        n = snprintf(out + used, outlen - used, "%s%s", used > 0 ? ", " : "", posh_hash_name((posh_hash)h));
        if (n < 0 || (size_t)n >= outlen - used)
            break;
        used += (size_t)n;
    }
    if (used == 0)
        snprintf(out, outlen, "no hash posh knows");
}

/*
 * A fingerprints document: posh_doc_parse has checked every value, so each known hash is base64 of the right
 * length; what it does not keep is how the value was written. Member names are exact (posh_hash_from_name), as
 * the parser reads them; with a duplicated name json-c keeps the last value, the one the parser checked.
 */
static void check_fingerprints(lint *l, const char *where, json_object *top, const posh_doc *doc)
{
    json_object *arr = json_object_object_get(top, "fingerprints");

    for (size_t i = 0; i < doc->n_descriptors; i++) {
        json_object *desc = json_object_array_get_idx(arr, i);
        char have[64];

        json_object_object_foreach(desc, name, value) {
            int h = posh_hash_from_name(name, strlen(name));
            size_t len = (size_t)json_object_get_string_len(value);
            if (h < 0 || len % 4 == 0)
                continue;
            finding(l, 0,
                    "%s: fingerprints[%zu].%s: base64 without its padding: posh accepts it, but " OTHER_CLIENTS
                    " match nothing; write \"%s%s\"",
                    where, i, name, json_object_get_string(value), len % 4 == 2 ? "==" : "=");
        }
        if (!(doc->descriptors[i].present & (1u << POSH_HASH_SHA256))) {
            hash_list(&doc->descriptors[i], have, sizeof(have));
            finding(l, 0, "%s: fingerprints[%zu]: no sha-256 (it has %s): Conversations reads only sha-256 and "
                          "matches nothing",
                    where, i, have);
        }
    }
}

/* A JWK Set's keys that name their certificate by SHA-1 alone, when others do better (else see check_sha1). */
static void check_keys(lint *l, const char *where, const posh_doc *doc, int only_sha1)
{
    for (size_t i = 0; !only_sha1 && i < doc->n_descriptors; i++)
        if (doc->descriptors[i].present == 1u << POSH_HASH_SHA1)
            finding(l, 0,
                    "%s: keys[%zu]: only x5t, a SHA-1 thumbprint: clients that refuse SHA-1 (posh with "
                    "POSH_NO_SHA1=1) match nothing; add x5t#S256",
                    where, i);
}

/* Every descriptor (or key) names its certificate by SHA-1 only. */
static int sha1_only(const posh_doc *doc)
{
    unsigned all = 0;

    for (size_t i = 0; i < doc->n_descriptors; i++)
        all |= doc->descriptors[i].present;
    return all == 1u << POSH_HASH_SHA1;
}

static void check_expires(lint *l, const char *where, int64_t expires)
{
    if (expires > EXPIRES_OVER)
        finding(l, 0,
                "%s: expires: %lld s (%lld days) is over 30 days: peers may go on trusting a replaced or "
                "compromised certificate that long",
                where, (long long)expires, (long long)(expires / 86400));
    else if (expires < EXPIRES_UNDER)
        finding(l, 0,
                "%s: expires: %lld s is under 5 minutes: peers fetch the document again for nearly every "
                "connection, and a short outage of the web server fails them",
                where, (long long)expires);
}

/*
 * Parse with the library's own parser (so an error is exactly what posh rejects, in its words), then look for what
 * posh accepts and others may not. POSH_OK and *doc (the caller's to clear), or the parser's error, reported.
 */
static posh_err lint_document(lint *l, const char *where, const char *buf, size_t len, doc_role role,
                              posh_doc *doc)
{
    char why[POSH_MSG_LEN];
    json_object *top = NULL;
    posh_err err = posh_doc_parse(buf, len, doc, why, sizeof(why));

    if (err != POSH_OK) {
        finding(l, 1, "%s: %s (%s)", where, why, cli_err_name(err));
        return err;
    }
    if (doc->kind == POSH_DOC_REFERENCE) {
        if (role == DOC_TARGET)
            return POSH_OK;
        finding(l, 0,
                "%s: a reference document (url %.*s): the community Prosody module mod_s2s_auth_posh never "
                "follows references, so its servers find no fingerprints here",
                where, SHOWN_URL, doc->url);
    } else if (doc->format == POSH_FORMAT_JWK) {
        finding(l, 0,
                "%s: a JWK Set (keys), the form of the drafts before June 2014: RFC 7711 clients (" OTHER_CLIENTS
                ") read only a fingerprints document and find nothing",
                where);
        check_keys(l, where, doc, sha1_only(doc));
    } else if (posh_json_parse(buf, len, json_type_object, &top, why, sizeof(why)) == POSH_OK) {
        /* The same bytes again, as the parser read them: it accepted them a moment ago. */
        check_fingerprints(l, where, top, doc);
        json_object_put(top);
    }
    if (doc->kind != POSH_DOC_REFERENCE && sha1_only(doc))
        finding(l, 0,
                "%s: only SHA-1 %s: clients that refuse SHA-1 (posh with POSH_NO_SHA1=1) match nothing, and SHA-1 "
                "no longer resists collisions; add %s",
                where, doc->format == POSH_FORMAT_JWK ? "thumbprints (x5t)" : "fingerprints",
                doc->format == POSH_FORMAT_JWK ? "x5t#S256" : "sha-256");
    check_expires(l, where, doc->expires);
    return POSH_OK;
}

/* ---- a domain: the lookup's steps, each judged ---- */

/* A reference's target (url, from source's document): found, a fingerprints document or a JWK Set. */
static void lint_target(lint *l, const char *domain, const char *url)
{
    posh_doc doc = {0};
    response t;

    fetch(l, url, &t);
    if (t.err != POSH_OK) {
        finding(l, 1, "%s (%s)", t.msg, cli_err_name(t.err));
    } else if (t.fr.status >= 400) {
        finding(l, 1, "reference from %s to %.*s: document not found (%s: HTTP status %ld) (%s)", domain,
                SHOWN_URL, url, t.fr.final_url, t.fr.status, cli_err_name(POSH_ERR_REFERENCE_TARGET));
    } else {
        check_content_type(l, &t);
        if (lint_document(l, t.fr.final_url, t.fr.body, t.fr.body_len, DOC_TARGET, &doc) == POSH_OK &&
            doc.kind == POSH_DOC_REFERENCE)
            finding(l, 1, "%.*s: a reference may not point to another reference (%.*s) (%s)", SHOWN_URL, url,
                    SHOWN_URL, doc.url, cli_err_name(POSH_ERR_REFERENCE_CHAIN));
    }
    posh_doc_clear(&doc);
    response_clear(&t);
}

/*
 * The library's order: the RFC 7711 URL, then (on a 4xx) the draft-02 URL; the first answer is the document, and
 * a reference is followed once. Both layouts always: lint judges for clients that know only one of them.
 */
static int lint_domain(lint *l, const char *domain, const char *svc, const char *proto)
{
    char rfc[POSH_MAX_URL_LEN + 1], draft[POSH_MAX_URL_LEN + 1], tried[2 * POSH_MAX_URL_LEN + 64] = "";
    posh_doc doc = {0};
    response src;

    if (posh_build_url(POSH_LAYOUT_RFC7711, domain, svc, proto, rfc, sizeof(rfc)) != POSH_OK ||
        posh_build_url(POSH_LAYOUT_DRAFT02, domain, svc, proto, draft, sizeof(draft)) != POSH_OK)
        return cli_usage_error(CMD, "%s: the URL would be too long", domain);
    if (handle_setup(l) != 0) {
        cli_error(CMD, "cannot set up libcurl");
        return CLI_USAGE;
    }
    l->deadline_ms = posh_now_ms() + l->cfg->timeout_ms;

    fetch(l, rfc, &src);
    if (src.err == POSH_OK && src.fr.status >= 400) {
        snprintf(tried, sizeof(tried), "%s: HTTP status %ld", src.fr.final_url, src.fr.status);
        response_clear(&src);
        fetch(l, draft, &src);
        if (src.err == POSH_OK && src.fr.status >= 400) {
            finding(l, 1, "no POSH document for %s (%s; %s: HTTP status %ld) (%s)", domain, tried, src.fr.final_url,
                    src.fr.status, cli_err_name(POSH_ERR_NO_POSH));
            goto done;
        }
        if (src.err == POSH_OK)
            finding(l, 0,
                    "%s: only the draft-02 URL answers (%s): RFC 7711 clients ask only at %s and find nothing",
                    draft, tried, rfc);
    }
    if (src.err != POSH_OK) {
        finding(l, 1, "%s (%s)", src.msg, cli_err_name(src.err));
        goto done;
    }
    check_content_type(l, &src);
    if (lint_document(l, src.fr.final_url, src.fr.body, src.fr.body_len, DOC_SOURCE, &doc) == POSH_OK &&
        doc.kind == POSH_DOC_REFERENCE)
        lint_target(l, domain, doc.url);
done:
    posh_doc_clear(&doc);
    response_clear(&src);
    return 0;
}

/* ---- a file ---- */

/*
 * At most FILE_CAP + 1 bytes of path ("-": standard input) into *buf. A named file must be a regular file (a FIFO
 * or a device could feed us forever; O_NONBLOCK so that opening a FIFO does not wait for a writer). 0, or -1
 * with the reason printed.
 */
static int read_document(const char *path, char **buf, size_t *len)
{
    int fd = 0;
    struct stat st;
    char *data = NULL;
    size_t used = 0;

    *buf = NULL;
    if (strcmp(path, "-") != 0) {
        if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
            cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            cli_error(CMD, "%s: not a regular file", path);
            goto fail;
        }
    }
    if ((data = malloc((size_t)FILE_CAP + 2)) == NULL) {
        cli_error(CMD, "out of memory");
        goto fail;
    }
    while (used <= (size_t)FILE_CAP) {
        ssize_t n = read(fd, data + used, (size_t)FILE_CAP + 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cli_error(CMD, "%s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    data[used] = '\0';
    if (fd > 0)
        close(fd);
    *buf = data;
    *len = used;
    return 0;
fail:
    if (fd > 0)
        close(fd);
    free(data);
    return -1;
}

static int lint_file(lint *l, const char *path)
{
    posh_doc doc = {0};
    char *buf;
    size_t len;

    if (read_document(path, &buf, &len) != 0)
        return CLI_USAGE;
    if (len > (size_t)l->cfg->max_bytes)
        finding(l, 1, "%s: body larger than %ld bytes (%s)", path, l->cfg->max_bytes,
                cli_err_name(POSH_ERR_TOO_LARGE));
    else
        lint_document(l, path, buf, len, DOC_FILE, &doc);
    posh_doc_clear(&doc);
    free(buf);
    return 0;
}

/* ---- the command ---- */

static int summary(lint *l, const char *what)
{
    char shown[1024];

    posh_escape(shown, sizeof(shown), what, POSH_ESCAPE_RAW);
    if (printf("summary: %s: %ld error%s, %ld warning%s (%s)\n", shown, l->errors, l->errors == 1 ? "" : "s",
               l->warnings, l->warnings == 1 ? "" : "s",
               l->errors > 0     ? "posh rejects it"
               : l->warnings > 0 ? "posh accepts it; other clients may not"
                                 : "clean") < 0 ||
        fflush(stdout) != 0 || l->write_failed) {
        cli_error(CMD, "cannot write the findings to stdout");
        return LINT_ERRORS;
    }
    return l->errors > 0 ? LINT_ERRORS : l->warnings > 0 ? LINT_WARNINGS : LINT_CLEAN;
}

int cmd_lint(int argc, char **argv)
{
    static const struct option opts[] = {
        {"service", required_argument, NULL, 's'},
        {"file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *service = NULL, *file = NULL;
    char domain[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1], proto[POSH_MAX_SERVICE_LEN + 1];
    char what[POSH_MAX_DOMAIN_LEN + 2 * POSH_MAX_SERVICE_LEN + 8];
    lint l = {0};
    int c, rc;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            service = optarg;
            break;
        case 'f':
            file = optarg;
            break;
        case 'h':
            fputs(lint_help, stdout);
            return CLI_OK;
        default:
            return cli_option_error(CMD, c, argv);
        }
    }
    if (file != NULL) {
        if (argc - optind > 0)
            return cli_usage_error(CMD, "give DOMAIN or --file, not both");
        if (service != NULL)
            return cli_usage_error(CMD, "--service chooses what to fetch: not with --file");
    } else {
        if (argc - optind != 1)
            return cli_usage_error(CMD, argc - optind < 1 ? "DOMAIN (or --file) is required" : "too many arguments");
        if (posh_domain_normalize(argv[optind], domain, sizeof(domain)) != POSH_OK)
            return cli_usage_error(CMD, "%s: '%s'", posh_strerror(POSH_ERR_BAD_DOMAIN), argv[optind]);
        if (posh_service_parse(service != NULL ? service : "xmpp-server", svc, proto) != POSH_OK)
            return cli_usage_error(CMD, "%s: '%s'", posh_strerror(POSH_ERR_BAD_SERVICE), service != NULL ? service : "");
    }
    if (net_from_env(&l) != 0) {
        curl_slist_free_all(l.connect_to);
        posh_config_free(l.cfg);
        return CLI_USAGE;
    }
    if (file != NULL) {
        rc = lint_file(&l, file);
        snprintf(what, sizeof(what), "%s", file);
    } else {
        /* Single-threaded here, as curl_global_init wants; paired with the cleanup below. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            cli_error(CMD, "cannot initialise libcurl");
            curl_slist_free_all(l.connect_to);
            posh_config_free(l.cfg);
            return CLI_USAGE;
        }
        rc = lint_domain(&l, domain, svc, proto);
        curl_easy_cleanup(l.curl);
        curl_global_cleanup();
        if (strcmp(proto, "tcp") == 0)
            snprintf(what, sizeof(what), "%s %s", domain, svc);
        else
            snprintf(what, sizeof(what), "%s _%s._%s", domain, svc, proto);
    }
    curl_slist_free_all(l.connect_to);
    posh_config_free(l.cfg);
    return rc != 0 ? rc : summary(&l, what);
}
