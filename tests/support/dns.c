/*
 * dns.c - see dns.h. Parses only the header and the one question of a query (RFC 1035 §4.1), answers from a
 * fixed table, and drops anything it cannot read. UDP only: the answers are far below 512 bytes.
 */
#include "dns.h"
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_RECORDS 64
#define MAX_LOG 4096
#define NAME_MAX_TEXT 254            /* 253 characters + NUL */
#define TTL 60

enum { RCODE_NOERROR = 0, RCODE_FORMERR = 1, RCODE_NXDOMAIN = 3, RCODE_NOTIMP = 4, RCODE_REFUSED = 5 };

typedef struct record {
    char name[NAME_MAX_TEXT];
    int type;                        /* 0: the name exists, no data */
    unsigned char rdata[NAME_MAX_TEXT + 8];
    size_t rdlen;
} record;

typedef struct question_log {
    char name[NAME_MAX_TEXT];
    int type;
    int rcode;
} question_log;

struct ts_dns {
    record rec[MAX_RECORDS];
    size_t nrec;
    int fd;
    int stop_pipe[2];
    int port;
    int running;
    pthread_t thread;
    pthread_mutex_t mu;              /* guards log and nlog */
    question_log log[MAX_LOG];
    size_t nlog;
    long dropped;                    /* questions past MAX_LOG (still answered) */
};

/* name without a trailing dot, lower case; -1 if it is not a plausible DNS name. */
static int normalise(const char *in, char out[NAME_MAX_TEXT])
{
    size_t len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= NAME_MAX_TEXT)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        out[i] = c;
    }
    out[len] = '\0';
    return 0;
}

/* Wire form of a name (uncompressed labels). Returns its length or -1. */
static int encode_name(const char *name, unsigned char *out, size_t cap)
{
    size_t n = 0;
    const char *p = name;
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t l = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63 || n + 1 + l + 1 > cap)
            return -1;
        out[n++] = (unsigned char)l;
        memcpy(out + n, p, l);
        n += l;
        p += l;
        if (*p == '.')
            p++;
    }
    if (n + 1 > cap)
        return -1;
    out[n++] = 0;
    return (int)n;
}

ts_dns *ts_dns_new(void)
{
    ts_dns *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        ts_set_error("ts_dns_new: out of memory");
        return NULL;
    }
    d->fd = -1;
    d->stop_pipe[0] = d->stop_pipe[1] = -1;
    pthread_mutex_init(&d->mu, NULL);
    return d;
}

static record *add(ts_dns *d, const char *name, int type)
{
    record *r;
    if (d->running || d->nrec == MAX_RECORDS) {
        ts_set_error("ts_dns: cannot add a record (%s)", d->running ? "already started" : "table full");
        return NULL;
    }
    r = &d->rec[d->nrec];
    memset(r, 0, sizeof(*r));
    if (normalise(name, r->name) != 0) {
        ts_set_error("ts_dns: bad name '%s'", name);
        return NULL;
    }
    r->type = type;
    d->nrec++;
    return r;
}

/* An A (family AF_INET) or AAAA (AF_INET6) record of addr, in its text form. */
static int add_address(ts_dns *d, const char *name, int family, int type, const char *addr)
{
    unsigned char a[16];
    size_t len = family == AF_INET ? 4 : 16;
    record *r;
    if (inet_pton(family, addr, a) != 1) {
        ts_set_error("ts_dns_add_%s: bad address '%s'", family == AF_INET ? "a" : "aaaa", addr);
        return -1;
    }
    if ((r = add(d, name, type)) == NULL)
        return -1;
    memcpy(r->rdata, a, len);
    r->rdlen = len;
    return 0;
}

int ts_dns_add_a(ts_dns *d, const char *name, const char *addr)
{
    return add_address(d, name, AF_INET, TS_DNS_A, addr);
}

int ts_dns_add_aaaa(ts_dns *d, const char *name, const char *addr)
{
    return add_address(d, name, AF_INET6, TS_DNS_AAAA, addr);
}

int ts_dns_add_srv(ts_dns *d, const char *name, int priority, int weight, int port, const char *target)
{
    char t[NAME_MAX_TEXT];
    record *r;
    int n;
    if (priority < 0 || priority > 65535 || weight < 0 || weight > 65535 || port < 0 || port > 65535 ||
        normalise(target, t) != 0) {
        ts_set_error("ts_dns_add_srv: bad SRV data for '%s'", name);
        return -1;
    }
    if ((r = add(d, name, TS_DNS_SRV)) == NULL)
        return -1;
    r->rdata[0] = (unsigned char)(priority >> 8);
    r->rdata[1] = (unsigned char)priority;
    r->rdata[2] = (unsigned char)(weight >> 8);
    r->rdata[3] = (unsigned char)weight;
    r->rdata[4] = (unsigned char)(port >> 8);
    r->rdata[5] = (unsigned char)port;
    if ((n = encode_name(t, r->rdata + 6, sizeof(r->rdata) - 6)) < 0) {
        d->nrec--;
        ts_set_error("ts_dns_add_srv: bad target '%s'", target);
        return -1;
    }
    r->rdlen = 6 + (size_t)n;
    return 0;
}

int ts_dns_add_empty(ts_dns *d, const char *name)
{
    return add(d, name, 0) != NULL ? 0 : -1;
}

/* Read the question's name at q[*off] (labels only: a pointer in a question is refused) into text. */
static int read_qname(const unsigned char *q, size_t len, size_t *off, char text[NAME_MAX_TEXT])
{
    size_t o = *off, t = 0;
    for (;;) {
        size_t l;
        if (o >= len)
            return -1;
        l = q[o++];
        if (l == 0)
            break;
        if (l > 63 || o + l > len || t + l + 1 >= NAME_MAX_TEXT)
            return -1;
        if (t > 0)
            text[t++] = '.';
        memcpy(text + t, q + o, l);
        t += l;
        o += l;
    }
    if (t == 0)
        return -1;                   /* the root: nobody here asks for it */
    text[t] = '\0';
    *off = o;
    return 0;
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void record_question(ts_dns *d, const char *name, int type, int rcode)
{
    pthread_mutex_lock(&d->mu);
    if (d->nlog < MAX_LOG) {
        question_log *l = &d->log[d->nlog++];
        snprintf(l->name, sizeof(l->name), "%s", name);
        l->type = type;
        l->rcode = rcode;
    } else {
        d->dropped++;
    }
    pthread_mutex_unlock(&d->mu);
}

/* Build the answer to query q into out; returns its length, or 0 to send nothing. */
static size_t answer(ts_dns *d, const unsigned char *q, size_t len, unsigned char *out, size_t cap)
{
    char raw[NAME_MAX_TEXT], name[NAME_MAX_TEXT];
    size_t off = 12, qend, n;
    unsigned qtype, qclass, ancount = 0;
    int rcode = RCODE_NOERROR, known = 0;

    if (len < 12 || (q[2] & 0x80) != 0)
        return 0;                    /* too short, or a response */
    if (((q[2] >> 3) & 0x0f) != 0)
        rcode = RCODE_NOTIMP;        /* not a standard query */
    if (q[4] != 0 || q[5] != 1 || read_qname(q, len, &off, raw) != 0 || off + 4 > len)
        return 0;                    /* exactly one readable question, or silence */
    qtype = (unsigned)q[off] << 8 | q[off + 1];
    qclass = (unsigned)q[off + 2] << 8 | q[off + 3];
    qend = off + 4;
    if (qend > cap)
        return 0;
    if (normalise(raw, name) != 0)
        return 0;
    if (rcode == RCODE_NOERROR && qclass != 1)
        rcode = RCODE_REFUSED;

    /* Header and question, echoed as asked (case included). */
    memcpy(out, q, qend);
    out[2] = (unsigned char)(0x84 | (q[2] & 0x01)); /* QR, AA, RD copied */
    n = qend;
    if (rcode == RCODE_NOERROR) {
        for (size_t i = 0; i < d->nrec; i++) {
            const record *r = &d->rec[i];
            if (strcmp(r->name, name) != 0)
                continue;
            known = 1;
            if (r->type == 0 || (unsigned)r->type != qtype)
                continue;
            if (n + 12 + r->rdlen > cap)
                break;               /* cannot happen with 64 records in 1232 bytes... but never overflow */
            put16(out + n, 0xc00c);  /* the question's name */
            put16(out + n + 2, (unsigned)r->type);
            put16(out + n + 4, 1);
            out[n + 6] = 0;
            out[n + 7] = 0;
            put16(out + n + 8, TTL);
            put16(out + n + 10, (unsigned)r->rdlen);
            memcpy(out + n + 12, r->rdata, r->rdlen);
            n += 12 + r->rdlen;
            ancount++;
        }
        if (!known)
            rcode = RCODE_NXDOMAIN;
    }
    out[3] = (unsigned char)rcode;
    put16(out + 6, ancount);
    put16(out + 8, 0);
    put16(out + 10, 0);
    record_question(d, name, (int)qtype, rcode);
    return n;
}

static void *serve(void *arg)
{
    ts_dns *d = arg;
    unsigned char q[1500], out[1232];
    for (;;) {
        struct pollfd p[2] = {{.fd = d->fd, .events = POLLIN}, {.fd = d->stop_pipe[0], .events = POLLIN}};
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof(from);
        ssize_t got;
        size_t n;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents != 0)
            break;
        got = recvfrom(d->fd, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (got <= 0)
            continue;
        n = answer(d, q, (size_t)got, out, sizeof(out));
        if (n > 0)
            sendto(d->fd, out, n, 0, (struct sockaddr *)&from, fromlen);
    }
    return NULL;
}

int ts_dns_start(ts_dns *d, const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t salen = sizeof(sa);
    sigset_t all, old;
    int rc;

    if (d->running || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 || port < 0 || port > 65535) {
        ts_set_error("ts_dns_start: bad address %s:%d or already started", addr, port);
        return -1;
    }
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(d->fd, (struct sockaddr *)&sa, &salen) != 0) {
        ts_set_error("ts_dns_start: udp %s:%d: %s", addr, port, strerror(errno));
        return -1;
    }
    d->port = ntohs(sa.sin_port);
    if (pipe2(d->stop_pipe, O_CLOEXEC) != 0) {
        ts_set_error("ts_dns_start: pipe: %s", strerror(errno));
        return -1;
    }
    /* The thread takes no signals: the test's children are reaped by the test thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&d->thread, NULL, serve, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ts_set_error("ts_dns_start: pthread_create: %s", strerror(rc));
        return -1;
    }
    d->running = 1;
    return 0;
}

int ts_dns_port(ts_dns *d)
{
    return d->running ? d->port : -1;
}

long ts_dns_queries(ts_dns *d, const char *name, int type)
{
    char want[NAME_MAX_TEXT];
    long count = 0;
    if (name != NULL && normalise(name, want) != 0)
        return -1;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->nlog; i++) {
        if ((name == NULL || strcmp(d->log[i].name, want) == 0) && (type == 0 || d->log[i].type == type))
            count++;
    }
    pthread_mutex_unlock(&d->mu);
    return count;
}

static const char *type_name(int type)
{
    switch (type) {
    case TS_DNS_A: return "A";
    case TS_DNS_AAAA: return "AAAA";
    case TS_DNS_SRV: return "SRV";
    case 52: return "TLSA";
    default: return "?";
    }
}

char *ts_dns_log(ts_dns *d)
{
    size_t cap, len = 0;
    char *s;
    pthread_mutex_lock(&d->mu);
    cap = d->nlog * (NAME_MAX_TEXT + 32) + 64;
    s = malloc(cap);
    if (s != NULL) {
        s[0] = '\0';
        for (size_t i = 0; i < d->nlog; i++)
            len += (size_t)snprintf(s + len, cap - len, "%s %s(%d) rcode %d\n", d->log[i].name,
                                    type_name(d->log[i].type), d->log[i].type, d->log[i].rcode);
        if (d->dropped > 0)
            snprintf(s + len, cap - len, "(%ld more)\n", d->dropped);
    }
    pthread_mutex_unlock(&d->mu);
    return s;
}

void ts_dns_free(ts_dns *d)
{
    if (d == NULL)
        return;
    if (d->running) {
        (void)!write(d->stop_pipe[1], "x", 1);
        pthread_join(d->thread, NULL);
    }
    if (d->fd >= 0)
        close(d->fd);
    if (d->stop_pipe[0] >= 0)
        close(d->stop_pipe[0]);
    if (d->stop_pipe[1] >= 0)
        close(d->stop_pipe[1]);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
