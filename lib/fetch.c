/*
 * fetch.c - one HTTPS GET under POSH rules: https only (every hop), verified server certificates, redirects
 * followed by hand so each target is checked and counted, a body cap, and an absolute deadline.
 */
#include "client_internal.h"

#include <stdlib.h>
#include <string.h>

int64_t posh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef posh_body body_buf;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    body_buf *b = userdata;
    size_t n = nmemb; /* size is always 1 for write callbacks */

    (void)size;
    if (n > b->max - b->len) {
        b->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        p = realloc(b->data, cap);
        if (p == NULL) {
            b->nomem = true;
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* "HOST:PORT:ADDR:PORT" entries separated by commas; each part may be empty except the separators. */
posh_err posh_connect_to_parse(const char *list, struct curl_slist **out, char *msg, size_t msglen)
{
    const char *p = list;
    *out = NULL;
    if (list == NULL || list[0] == '\0')
        return POSH_OK;
    while (*p != '\0') {
        size_t n = strcspn(p, ","), colons = 0;
        char entry[512];
        struct curl_slist *next;
        if (n == 0 || n >= sizeof(entry))
            goto bad;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch == ':')
                colons++;
            else if (ch <= ' ' || ch >= 0x7f)
                goto bad;
        }
        /* An IPv6 address in brackets has colons of its own: count only the 3 separators we need at least. */
        if (colons < 3)
            goto bad;
        memcpy(entry, p, n);
        entry[n] = '\0';
        if ((next = curl_slist_append(*out, entry)) == NULL) {
            curl_slist_free_all(*out);
            *out = NULL;
            return POSH_ERR_NOMEM;
        }
        *out = next;
        p += n;
        if (*p == ',')
            p++;
    }
    return POSH_OK;
bad:
    posh_msg(msg, msglen, "\"%.100s\": expected comma-separated HOST:PORT:ADDR:PORT entries", list);
    curl_slist_free_all(*out);
    *out = NULL;
    return POSH_ERR_CONFIG;
}

posh_err posh_fetch_handle_setup(CURL *curl, const posh_config *cfg, struct curl_slist *connect_to)
{
    CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                                          \
    do {                                                                                                       \
        if (rc == CURLE_OK)                                                                                    \
            rc = curl_easy_setopt(curl, opt, val);                                                             \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SET(CURLOPT_PROXY, ""); /* never an environment proxy: the path to the source domain must be ours */
    SET(CURLOPT_USERAGENT, "posh/" POSH_VERSION_STRING);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cfg->max_bytes);
    /*
     * Configured trust anchors replace the system store; they never add to it. libcurl keeps its built-in CA
     * file and directory unless each is set, so the one not configured is set to NULL (none): a CA file alone
     * must not leave /etc/ssl/certs trusted beside it.
     */
    if (cfg->ca_file != NULL || cfg->ca_path != NULL) {
        SET(CURLOPT_CAINFO, cfg->ca_file);
        SET(CURLOPT_CAPATH, cfg->ca_path);
    }
    if (connect_to != NULL)
        SET(CURLOPT_CONNECT_TO, connect_to);
    SET(CURLOPT_WRITEFUNCTION, body_write);
#undef SET
    return rc == CURLE_OK ? POSH_OK : POSH_ERR_INTERNAL;
}

void posh_fetch_result_clear(posh_fetch_result *r)
{
    free(r->body);
    free(r->final_url);
    free(r->content_type);
    memset(r, 0, sizeof(*r));
}

/*
 * Only our own allocations mean POSH_ERR_NOMEM (not cached). A CURLcode is what a transfer did: libcurl also
 * says CURLE_OUT_OF_MEMORY when a response header exceeds its limit (100 KiB a line), which the web server
 * controls, so it is a fetch failure and cached as such, or a hostile server would set our request rate.
 */
static posh_err map_curl_error(CURLcode rc, const body_buf *b)
{
    if (b->too_large)
        return POSH_ERR_TOO_LARGE;
    if (b->nomem)
        return POSH_ERR_NOMEM;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return POSH_ERR_TIMEOUT;
    if (rc == CURLE_FILESIZE_EXCEEDED)
        return POSH_ERR_TOO_LARGE;
    if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT)
        return POSH_ERR_CONNECT;
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER || rc == CURLE_SSL_ISSUER_ERROR ||
        rc == CURLE_SSL_INVALIDCERTSTATUS || rc == CURLE_SSL_CRL_BADFILE)
        return POSH_ERR_TLS;
    return POSH_ERR_FETCH;
}

static int is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static void trace_add(posh_trace *trace, const char *url, long status)
{
    if (trace == NULL || trace->n >= POSH_MAX_REQUESTS)
        return;
    trace->req[trace->n].url = strdup(url);
    trace->req[trace->n].status = status;
    if (trace->req[trace->n].url != NULL)
        trace->n++;
}

/* Say what went wrong with a transfer, in words an operator can act on. */
static void transfer_message(CURLcode rc, posh_err err, const body_buf *b, const char *url, const char *errbuf,
                             char *msg, size_t msglen)
{
    if (err == POSH_ERR_TOO_LARGE)
        posh_msg(msg, msglen, "%s: body larger than %zu bytes", url, b->max);
    else if (err == POSH_ERR_NOMEM)
        posh_msg(msg, msglen, "%s: out of memory for the body", url);
    else if (rc == CURLE_OUT_OF_MEMORY)
        /* libcurl leaves its error buffer empty here; its own allocations failing looks the same. */
        posh_msg(msg, msglen, "%s: libcurl refused the response (a header over its 100 KiB limit, or libcurl "
                 "out of memory)", url);
    else
        posh_msg(msg, msglen, "%s: %s", url, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
}

/* Set curl up for one request of op->current, no redirect following, within the deadline. */
static posh_err hop_begin(posh_fetch_op *op)
{
    int64_t left = op->deadline_ms - posh_now_ms();

    op->b.len = 0;
    op->b.too_large = op->b.nomem = false;
    op->errbuf[0] = '\0';
    if (left <= 0) {
        posh_msg(op->msg, op->msglen, "%s: time budget exhausted before the request", op->current);
        trace_add(op->trace, op->current, 0);
        return POSH_ERR_TIMEOUT;
    }
    curl_easy_setopt(op->curl, CURLOPT_URL, op->current);
    curl_easy_setopt(op->curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(op->curl, CURLOPT_TIMEOUT_MS, (long)left);
    curl_easy_setopt(op->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)left);
    curl_easy_setopt(op->curl, CURLOPT_WRITEDATA, &op->b);
    curl_easy_setopt(op->curl, CURLOPT_ERRORBUFFER, op->errbuf);
    return POSH_OK;
}

void posh_fetch_op_clear(posh_fetch_op *op)
{
    if (op->curl != NULL)
        curl_easy_setopt(op->curl, CURLOPT_ERRORBUFFER, NULL);
    free(op->b.data);
    free(op->current);
    op->b.data = op->current = NULL;
    op->curl = NULL;
}

posh_err posh_fetch_begin(posh_fetch_op *op, CURL *curl, const posh_config *cfg, const char *url,
                          int64_t deadline_ms, posh_trace *trace, char *msg, size_t msglen)
{
    posh_err err;

    *op = (posh_fetch_op){.cfg = cfg, .curl = curl, .url = url, .deadline_ms = deadline_ms, .trace = trace,
                          .msg = msg, .msglen = msglen};
    op->b.max = (size_t)cfg->max_bytes;
    if ((op->current = strdup(url)) == NULL)
        return POSH_ERR_NOMEM;
    if ((err = hop_begin(op)) != POSH_OK)
        posh_fetch_op_clear(op);
    return err;
}

/* The outcome of a finished hop: POSH_OK and *location (a redirect's target, malloc'd) or an error. */
static posh_err hop_end(posh_fetch_op *op, CURLcode rc, long *status, char **location)
{
    char *loc = NULL;
    posh_err err;

    *status = 0;
    *location = NULL;
    curl_easy_setopt(op->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_getinfo(op->curl, CURLINFO_RESPONSE_CODE, status);
    trace_add(op->trace, op->current, *status);
    if (rc != CURLE_OK) {
        err = map_curl_error(rc, &op->b);
        transfer_message(rc, err, &op->b, op->current, op->errbuf, op->msg, op->msglen);
        return err;
    }
    if (is_redirect(*status) && curl_easy_getinfo(op->curl, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK &&
        loc != NULL) {
        if ((*location = strdup(loc)) == NULL)
            return POSH_ERR_NOMEM;
    }
    return POSH_OK;
}

/*
 * The lowest lifetime the response's Cache-Control headers give: max-age=N (delta-seconds, RFC 9111 1.2.2; a
 * value past 2^31 - 1 counts as 2^31 - 1; the quoted form "N" accepted, as RFC 9111 5.2 asks of readers), 0 for
 * no-cache or no-store; -1 when none says. Directives are separated by commas with optional whitespace around
 * them (RFC 9110 5.6.1); names are case-insensitive; anything unreadable is ignored (the caller's maximum stands).
 */
static long directive_max_age(const char *p, size_t n)
{
    long v = 0;
    if ((n == 8 && strncasecmp(p, "no-store", 8) == 0) || (n == 8 && strncasecmp(p, "no-cache", 8) == 0))
        return 0;
    if (n <= 8 || strncasecmp(p, "max-age=", 8) != 0)
        return -1;
    p += 8;
    n -= 8;
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"')
        p++, n -= 2;
    if (n == 0 || strspn(p, "0123456789") < n)
        return -1;
    for (size_t k = 0; k < n; k++)
        v = v >= 214748364 ? 2147483647L : v * 10 + (p[k] - '0'); /* capped where a 32-bit long ends */
    return v;
}

static long cache_control_max_age(CURL *curl)
{
    struct curl_header *h;
    long best = -1;
    for (size_t i = 0; curl_easy_header(curl, "Cache-Control", i, CURLH_HEADER, -1, &h) == CURLHE_OK; i++) {
        const char *p = h->value;
        while (*p != '\0') {
            size_t n, len;
            long v;
            p += strspn(p, " \t,");
            n = len = strcspn(p, ",");
            /* The directive without the whitespace before its comma. */
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            if ((v = directive_max_age(p, len)) >= 0 && (best < 0 || v < best))
                best = v;
            p += n;
        }
        if (h->amount <= i + 1)
            break;
    }
    return best;
}

int posh_fetch_step(posh_fetch_op *op, CURLcode rc, posh_fetch_result *out, posh_err *errp)
{
    char *location = NULL;
    long status;
    posh_err err;

    memset(out, 0, sizeof(*out));
    err = hop_end(op, rc, &status, &location);
    if (err != POSH_OK)
        goto done;
    if (is_redirect(status)) {
        if (location == NULL) {
            posh_msg(op->msg, op->msglen, "%s: HTTP %ld without a usable Location", op->current, status);
            err = POSH_ERR_HTTP_STATUS;
        } else if (!posh_url_is_https(location, strlen(location))) {
            posh_msg(op->msg, op->msglen, "%s: redirect to \"%.200s\", which is not an https URL", op->current,
                     location);
            err = POSH_ERR_REDIRECT_SCHEME;
        } else if (++op->hops > op->cfg->max_redirects) {
            posh_msg(op->msg, op->msglen, "%s: redirect to %.200s would exceed %ld redirects", op->url, location,
                     op->cfg->max_redirects);
            err = POSH_ERR_TOO_MANY_REDIRECTS;
        } else {
            free(op->current);
            op->current = location;
            location = NULL;
            if ((err = hop_begin(op)) == POSH_OK)
                return 0; /* the next hop is set up */
        }
        goto done;
    }
    if ((status >= 200 && status < 300) || (status >= 400 && status < 500)) {
        char *ct = NULL;
        out->status = status;
        out->max_age = cache_control_max_age(op->curl);
        if (curl_easy_getinfo(op->curl, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct != NULL &&
            (out->content_type = strdup(ct)) == NULL) {
            err = POSH_ERR_NOMEM;
            goto done;
        }
        out->body = op->b.data != NULL ? op->b.data : strdup("");
        out->body_len = op->b.len;
        out->final_url = op->current;
        op->b.data = NULL;
        op->current = NULL;
        err = out->body != NULL ? POSH_OK : POSH_ERR_NOMEM;
    } else {
        posh_msg(op->msg, op->msglen, "%s: HTTP status %ld", op->current, status);
        err = POSH_ERR_HTTP_STATUS;
    }
done:
    free(location);
    if (err != POSH_OK)
        posh_fetch_result_clear(out);
    posh_fetch_op_clear(op);
    *errp = err;
    return 1;
}

posh_err posh_fetch(CURL *curl, const posh_config *cfg, const char *url, int64_t deadline_ms, posh_trace *trace,
                    posh_fetch_result *out, char *msg, size_t msglen)
{
    posh_fetch_op op;
    posh_err err;

    memset(out, 0, sizeof(*out));
    if ((err = posh_fetch_begin(&op, curl, cfg, url, deadline_ms, trace, msg, msglen)) != POSH_OK)
        return err;
    while (!posh_fetch_step(&op, curl_easy_perform(curl), out, &err))
        ;
    return err;
}
