/*
 * stream.c - the reference identifier an XMPP program names only in its protocol (RFC 7712 section 5.2: the
 * `to` of the initial stream header). Prosody 0.12 starts STARTTLS on s2s with no SNI and no host name for
 * OpenSSL, but it has just sent `<stream:stream ... to='foo.example.com'>` in plaintext on that socket.
 *
 * write(), send() and sendto() are interposed. A call whose data does not start with '<' (or, once a header
 * was recorded, with a TLS handshake record) is passed on after a one-byte test; nothing the program sends is
 * ever changed. A call starting with '<' whose data opens with a stream start tag (after an optional XML
 * declaration; within its first STREAM_SCAN_MAX bytes) on a socket has its `to` recorded for that socket, identified by descriptor and inode so that a reused
 * descriptor never inherits another socket's record. Nothing is looked at once the program sent a TLS
 * handshake record on the socket (its handshake began), the record is consumed by that handshake's
 * verification, and close() forgets it. The table is bounded; when full, a new header is not recorded (that
 * connection then gets no POSH: fail closed).
 */
#include "shim_internal.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STREAM_RECORDS_MAX 1024  /* sockets with a recorded header and no verification or close yet */
#define STREAM_SCAN_MAX 4096     /* bytes of one call read for the start tag and its attributes */

typedef ssize_t (*write_fn)(int fd, const void *buf, size_t len);
typedef ssize_t (*send_fn)(int fd, const void *buf, size_t len, int flags);
typedef ssize_t (*sendto_fn)(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                             socklen_t tolen);
typedef int (*close_fn)(int fd);

static struct {
    write_fn write;
    send_fn send;
    sendto_fn sendto;
    close_fn close;
} real;

typedef struct stream_record {
    int fd;                              /* -1: free slot */
    dev_t dev;                           /* the socket's identity: a reused descriptor is another socket */
    ino_t ino;
    int tls_began;                       /* a TLS handshake record was sent: nothing more is looked at */
    char to[POSH_MAX_DOMAIN_LEN + 2];    /* normalised; "" when the last header had no usable `to` */
} stream_record;

static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static stream_record records[STREAM_RECORDS_MAX];
static size_t n_slots;                   /* slots ever used: the scans stop there */
static atomic_int live;                  /* records held: while 0, close() and TLS records cost one load */
static atomic_int full_logged;

static void stream_lock_acquire(void)
{
    pthread_mutex_lock(&stream_lock);
}

static void stream_lock_release(void)
{
    pthread_mutex_unlock(&stream_lock);
}

void shim_stream_init(void)
{
    real.write = (write_fn)shim_resolve("write", NULL, (void *)write);
    real.send = (send_fn)shim_resolve("send", NULL, (void *)send);
    real.sendto = (sendto_fn)shim_resolve("sendto", NULL, (void *)sendto);
    real.close = (close_fn)shim_resolve("close", NULL, (void *)close);
    pthread_atfork(stream_lock_acquire, stream_lock_release, stream_lock_release);
}

/* ---- the table (stream_lock held) ---- */

static stream_record *record_find(int fd)
{
    for (size_t i = 0; i < n_slots; i++)
        if (records[i].fd == fd)
            return &records[i];
    return NULL;
}

static void record_drop(stream_record *r)
{
    r->fd = -1;
    atomic_fetch_sub(&live, 1);
}

static stream_record *record_new(int fd)
{
    stream_record *r = NULL;
    for (size_t i = 0; i < n_slots && r == NULL; i++)
        if (records[i].fd == -1)
            r = &records[i];
    if (r == NULL && n_slots < STREAM_RECORDS_MAX)
        r = &records[n_slots++];
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    atomic_fetch_add(&live, 1);
    return r;
}

/* ---- reading a stream header ---- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' || c == '_' ||
           c == '-' || c == '.';
}

/*
 * The offset just past the stream start tag's name, or 0. As RFC 6120 section 4.2 has it, the stream header
 * opens what a program sends on the stream, after an optional XML declaration; so only that position is looked
 * at: an XML stanza ("<message ...") costs a two-byte test. The element is "stream:stream", or "stream" when the
 * streams namespace is the default one.
 */
static size_t stream_tag(const char *p, size_t len)
{
    static const char *const names[] = {"<stream:stream", "<stream"};
    size_t at = 0;

    if (len >= 5 && memcmp(p, "<?xml", 5) == 0) {
        const char *end = memmem(p, len, "?>", 2);
        if (end == NULL)
            return 0;
        for (at = (size_t)(end - p) + 2; at < len && is_space(p[at]); at++)
            ;
    }
    if (at + 1 >= len || p[at] != '<' || p[at + 1] != 's')
        return 0;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        size_t n = strlen(names[k]);
        if (at + n < len && memcmp(p + at, names[k], n) == 0 && (is_space(p[at + n]) || p[at + n] == '>'))
            return at + n;
    }
    return 0;
}

/*
 * The tag's attributes up to its '>': the value of `to` into to (raw, bounded). Returns 1 for a complete tag
 * (to "" when it has no `to`), 0 for anything else (cut off, malformed): then no reference is taken from it.
 */
static int stream_to_attr(const char *p, size_t len, size_t at, char *to, size_t tolen)
{
    to[0] = '\0';
    for (;;) {
        size_t name, name_len, value;
        char quote;
        while (at < len && is_space(p[at]))
            at++;
        if (at >= len)
            return 0;
        if (p[at] == '>' || (p[at] == '/' && at + 1 < len && p[at + 1] == '>'))
            return 1;
        for (name = at; at < len && is_name_char(p[at]); at++)
            ;
        name_len = at - name;
        while (at < len && is_space(p[at]))
            at++;
        if (name_len == 0 || at >= len || p[at] != '=')
            return 0;
        for (at++; at < len && is_space(p[at]); at++)
            ;
        if (at >= len || (p[at] != '\'' && p[at] != '"'))
            return 0;
        quote = p[at++];
        for (value = at; at < len && p[at] != quote && p[at] != '<'; at++)
            ;
        if (at >= len || p[at] != quote)
            return 0;
        if (name_len == 2 && memcmp(p + name, "to", 2) == 0) {
            if (at - value >= tolen)
                return 0;
            memcpy(to, p + value, at - value);
            to[at - value] = '\0';
        }
        at++;
    }
}

/* The program sent a stream start tag on fd: record its `to` (or that it had none usable). */
static void note_header(int fd, const char *p, size_t len, size_t tag_end)
{
    char raw[POSH_MAX_DOMAIN_LEN + 2], to[POSH_MAX_DOMAIN_LEN + 2] = "";
    struct stat st;
    stream_record *r;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return; /* a file that merely holds XML */
    if (stream_to_attr(p, len, tag_end, raw, sizeof(raw)) && raw[0] != '\0' &&
        posh_domain_normalize(raw, to, sizeof(to)) != POSH_OK)
        to[0] = '\0';
    pthread_mutex_lock(&stream_lock);
    r = record_find(fd);
    if (r != NULL && (r->dev != st.st_dev || r->ino != st.st_ino)) {
        record_drop(r); /* the descriptor now names another socket */
        r = NULL;
    }
    if (r == NULL)
        r = record_new(fd);
    if (r != NULL && !r->tls_began) {
        r->dev = st.st_dev;
        r->ino = st.st_ino;
        memcpy(r->to, to, sizeof(r->to));
    }
    pthread_mutex_unlock(&stream_lock);
    if (r == NULL && atomic_exchange(&full_logged, 1) == 0)
        posh_log(POSH_LOG_WARNING, "%d sockets with an XMPP stream header await their handshake: a further "
                 "one gets no POSH (logged once)", STREAM_RECORDS_MAX);
}

/* The program began a TLS handshake on fd: from now on nothing it sends there is looked at. */
static void note_tls(int fd)
{
    stream_record *r;
    pthread_mutex_lock(&stream_lock);
    if ((r = record_find(fd)) != NULL)
        r->tls_began = 1;
    pthread_mutex_unlock(&stream_lock);
}

/* What one write/send call means for the record; the common case costs a byte compare. */
static void observe(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t tag_end;

    if (len == 0 || p == NULL)
        return;
    if (p[0] == 0x16) {
        if (atomic_load(&live) > 0 && len >= 3 && p[1] == 0x03)
            note_tls(fd);
        return;
    }
    if (p[0] != '<')
        return;
    if (len > STREAM_SCAN_MAX)
        len = STREAM_SCAN_MAX;
    if ((tag_end = stream_tag((const char *)p, len)) != 0)
        note_header(fd, (const char *)p, len, tag_end);
}

int shim_stream_to(SSL *ssl, char *out, size_t outlen)
{
    int fd = SSL_get_wfd(ssl);
    struct stat st;
    stream_record *r;
    int found = 0;

    out[0] = '\0';
    if (atomic_load(&live) == 0 || fd < 0 || fstat(fd, &st) != 0)
        return 0;
    pthread_mutex_lock(&stream_lock);
    if ((r = record_find(fd)) != NULL) {
        if (r->dev == st.st_dev && r->ino == st.st_ino && r->to[0] != '\0' && strlen(r->to) < outlen) {
            memcpy(out, r->to, strlen(r->to) + 1);
            found = 1;
        }
        record_drop(r); /* consumed by this verification (or stale) */
    }
    pthread_mutex_unlock(&stream_lock);
    return found;
}

/* ---- the interposed functions ---- */

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    shim_ready();
    observe(fd, buf, len);
    if (real.write == NULL)
        return syscall(SYS_write, fd, buf, len);
    return real.write(fd, buf, len);
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    shim_ready();
    observe(fd, buf, len);
    if (real.send == NULL)
        return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
    return real.send(fd, buf, len, flags);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                           socklen_t tolen)
{
    shim_ready();
    observe(fd, buf, len);
    if (real.sendto == NULL)
        return syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
    return real.sendto(fd, buf, len, flags, to, tolen);
}

SHIM_EXPORT int close(int fd)
{
    shim_ready();
    if (atomic_load(&live) > 0) {
        stream_record *r;
        pthread_mutex_lock(&stream_lock);
        if ((r = record_find(fd)) != NULL)
            record_drop(r);
        pthread_mutex_unlock(&stream_lock);
    }
    if (real.close == NULL)
        return (int)syscall(SYS_close, fd);
    return real.close(fd);
}
