/*
 * evilhttps.c - an HTTPS/1.1 server that misbehaves on request: wrong statuses, huge or endless bodies,
 * bytes dripped slowly, no answer at all. One request per connection, on top of tlsserver.c.
 */
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_MAX 16384
#define CHUNK 16384

typedef struct route {
    char *path;
    ts_evil_route_opts o; /* o.body and o.location/content_type/headers point to owned copies */
    struct route *next;
} route;

typedef struct request {
    char *path, *head;
    struct request *next;
} request;

struct ts_evil {
    X509 *leaf;
    EVP_PKEY *key;
    ts_tls *tls;
    pthread_mutex_t mu;
    route *routes;     /* newest first; a replaced route stays (unreachable) until stop, so a connection
                          that found it can keep using it without a lock */
    request *requests; /* newest first */
};

static void route_free(route *r)
{
    free(r->path);
    free((void *)r->o.body);
    free((void *)r->o.location);
    free((void *)r->o.content_type);
    free((void *)r->o.headers);
    free(r);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 410: return "Gone";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Whatever";
    }
}

static int write_all(SSL *ssl, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        int chunk = len > CHUNK ? CHUNK : (int)len;
        int w = SSL_write(ssl, p, chunk);
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Read the request head (through the blank line) into buf: its length, or -1 (closed, too big, error). */
static long read_head(SSL *ssl, char *buf, size_t cap)
{
    size_t n = 0;
    while (n < cap - 1) {
        int r = SSL_read(ssl, buf + n, (int)(cap - 1 - n));
        char *end;
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL)
            return end + 4 - buf;
    }
    return -1;
}

static void send_body(ts_conn *c, const ts_evil_route_opts *o)
{
    size_t total = o->body_len + o->repeat_body_bytes, sent = 0;
    size_t step = o->drip_ms > 0 ? (o->drip_bytes ? o->drip_bytes : 1) : CHUNK;
    char buf[CHUNK];

    if (step > CHUNK)
        step = CHUNK;
    while (sent < total) {
        size_t n = total - sent < step ? total - sent : step;
        size_t from_body = sent < o->body_len ? (o->body_len - sent < n ? o->body_len - sent : n) : 0;
        if (from_body > 0)
            memcpy(buf, (const char *)o->body + sent, from_body);
        memset(buf + from_body, o->fill ? o->fill : 'a', n - from_body);
        if (write_all(ts_conn_ssl(c), buf, n) != 0)
            return;
        sent += n;
        if (o->drip_ms > 0 && sent < total && ts_conn_wait(c, o->drip_ms) != 0)
            return;
    }
}

static void respond(ts_conn *c, const ts_evil_route_opts *o)
{
    int status = o->status ? o->status : 200;
    char *head = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&head, &len);

    if (f == NULL) {
        ts_set_error("evilhttps: out of memory");
        return;
    }
    fprintf(f, "HTTP/1.1 %d %s\r\nConnection: close\r\n", status, reason(status));
    if (!o->no_content_type)
        fprintf(f, "Content-Type: %s\r\n", o->content_type ? o->content_type : "application/json");
    if (o->location != NULL)
        fprintf(f, "Location: %s\r\n", o->location);
    if (!o->no_content_length)
        fprintf(f, "Content-Length: %zu\r\n", o->body_len + o->repeat_body_bytes);
    fprintf(f, "%s\r\n", o->headers ? o->headers : "");
    if (fclose(f) != 0) {
        ts_set_error("evilhttps: out of memory");
    } else if (write_all(ts_conn_ssl(c), head, len) == 0) {
        send_body(c, o);
    }
    free(head);
}

static void handle(ts_conn *c, void *arg)
{
    static const ts_evil_route_opts not_found = {.status = 404, .content_type = "text/plain",
                                                 .body = "not found\n", .body_len = 10};
    static const ts_evil_route_opts bad = {.status = 400, .content_type = "text/plain", .body = "bad\n",
                                           .body_len = 4};
    ts_evil *e = arg;
    char buf[HEAD_MAX];
    long len = read_head(ts_conn_ssl(c), buf, sizeof(buf));
    const ts_evil_route_opts *o = &not_found;
    char *sp1, *sp2;
    request *rq;
    route *r;

    if (len < 0)
        return;
    buf[len] = '\0';
    sp1 = strchr(buf, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp2 == NULL || sp2 > strstr(buf, "\r\n")) {
        respond(c, &bad);
        return;
    }
    rq = calloc(1, sizeof(*rq));
    if (rq == NULL || (rq->path = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1))) == NULL ||
        (rq->head = strndup(buf, (size_t)len)) == NULL) {
        if (rq != NULL) {
            free(rq->path);
            free(rq);
        }
        ts_set_error("evilhttps: out of memory");
        return;
    }
    pthread_mutex_lock(&e->mu);
    rq->next = e->requests;
    e->requests = rq;
    for (r = e->routes; r != NULL; r = r->next)
        if (strcmp(r->path, rq->path) == 0) {
            o = &r->o;
            break;
        }
    pthread_mutex_unlock(&e->mu);

    if (o->close_immediately)
        ts_conn_abort(c);
    else if (o->hang)
        ts_conn_wait(c, -1);
    else
        respond(c, o);
}

ts_evil *ts_evil_new(X509 *leaf, EVP_PKEY *key)
{
    ts_evil *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        ts_set_error("evilhttps: out of memory");
        return NULL;
    }
    if (leaf == NULL || key == NULL || !X509_up_ref(leaf)) {
        ts_set_error("evilhttps: no certificate or key");
        free(e);
        return NULL;
    }
    e->leaf = leaf;
    if (!EVP_PKEY_up_ref(key)) {
        X509_free(leaf);
        free(e);
        ts_set_error("evilhttps: EVP_PKEY_up_ref failed");
        return NULL;
    }
    e->key = key;
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

static char *dup_or_null(const char *s, int *ok)
{
    char *d;
    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *ok = 0;
    return d;
}

int ts_evil_route(ts_evil *e, const char *path, const ts_evil_route_opts *o)
{
    route *r = calloc(1, sizeof(*r));
    int ok = r != NULL;

    if (path == NULL || path[0] != '/' || o == NULL) {
        ts_set_error("ts_evil_route: bad path or no options");
        free(r);
        return -1;
    }
    if (ok) {
        r->o = *o;
        r->o.body = NULL;
        r->o.body_len = o->body != NULL && o->body_len == 0 ? strlen(o->body) : o->body_len;
        if (o->body == NULL)
            r->o.body_len = 0;
        r->path = dup_or_null(path, &ok);
        r->o.location = dup_or_null(o->location, &ok);
        r->o.content_type = dup_or_null(o->content_type, &ok);
        r->o.headers = dup_or_null(o->headers, &ok);
        if (r->o.body_len > 0) {
            void *b = malloc(r->o.body_len);
            if (b != NULL)
                memcpy(b, o->body, r->o.body_len);
            else
                ok = 0;
            r->o.body = b;
        }
    }
    if (!ok) {
        ts_set_error("ts_evil_route: out of memory");
        if (r != NULL)
            route_free(r);
        return -1;
    }
    pthread_mutex_lock(&e->mu);
    r->next = e->routes;
    e->routes = r;
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int ts_evil_start(ts_evil *e)
{
    if (e->tls != NULL) {
        ts_set_error("ts_evil_start: already started");
        return -1;
    }
    e->tls = ts_tls_start_with(e->leaf, NULL, e->key, handle, e);
    return e->tls != NULL ? 0 : -1;
}

int ts_evil_port(ts_evil *e)
{
    return e->tls != NULL ? ts_tls_port(e->tls) : -1;
}

long ts_evil_requests(ts_evil *e, const char *path)
{
    long n = 0;
    pthread_mutex_lock(&e->mu);
    for (request *rq = e->requests; rq != NULL; rq = rq->next)
        if (path == NULL || strcmp(path, rq->path) == 0)
            n++;
    pthread_mutex_unlock(&e->mu);
    return n;
}

char *ts_evil_last_request(ts_evil *e, const char *path)
{
    char *head = NULL;
    pthread_mutex_lock(&e->mu);
    for (request *rq = e->requests; rq != NULL; rq = rq->next)
        if (path == NULL || strcmp(path, rq->path) == 0) {
            head = strdup(rq->head);
            break;
        }
    pthread_mutex_unlock(&e->mu);
    return head;
}

void ts_evil_stop(ts_evil *e)
{
    if (e == NULL)
        return;
    ts_tls_stop(e->tls);
    while (e->routes != NULL) {
        route *r = e->routes;
        e->routes = r->next;
        route_free(r);
    }
    while (e->requests != NULL) {
        request *rq = e->requests;
        e->requests = rq->next;
        free(rq->path);
        free(rq->head);
        free(rq);
    }
    X509_free(e->leaf);
    EVP_PKEY_free(e->key);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
