/*
 * stream.c - the reference identifier an XMPP program names only in its protocol (RFC 7712 section 5.2: the
 * `to` of the initial stream header). Prosody 0.12 starts STARTTLS on s2s with no SNI and no host name for
 * OpenSSL, but it has just sent `<stream:stream ... to='foo.example.com'>` in plaintext on that socket.
 *
 * write(), send() and sendto() are interposed. A call whose data does not start with '<' (or, once a header
 * was recorded, with a TLS handshake record) is passed on after a one-byte test; nothing the program sends is
 * ever changed. A call starting with '<' whose data opens with a stream start tag (stream_header.c reads it)
 * on a socket has its `to` recorded for that socket, identified by descriptor and inode so that a reused
 * descriptor never inherits another socket's record. Nothing is looked at once the program sent a TLS
 * handshake record on the socket (its handshake began), the record is consumed by that handshake's
 * verification, and close() forgets it. The table is bounded; when full, a new header is not recorded (that
 * connection then gets no POSH: fail closed).
 */
#include "shim_internal.h"
#include "stream_header.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STREAM_RECORDS_MAX 1024  /* sockets with a recorded header and no verification or close yet */

typedef ssize_t (*write_fn)(int fd, const void *buf, size_t len);
typedef ssize_t (*send_fn)(int fd, const void *buf, size_t len, int flags);
typedef ssize_t (*sendto_fn)(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                             socklen_t tolen);
typedef int (*close_fn)(int fd);

/* Set once at start-up (shim_ready); read on every call without a lock, hence atomic. */
static struct {
    _Atomic(write_fn) write;
    _Atomic(send_fn) send;
    _Atomic(sendto_fn) sendto;
    _Atomic(close_fn) close;
} real;

typedef struct stream_record {
    atomic_int fd;                       /* -1: free slot; cleared without the lock by close() */
    dev_t dev;                           /* the socket's identity: a reused descriptor is another socket */
    ino_t ino;
    int tls_began;                       /* a TLS handshake record was sent: nothing more is looked at */
    char to[POSH_MAX_DOMAIN_LEN + 2];    /* normalised; "" when the last header had no usable `to` */
} stream_record;

static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static stream_record records[STREAM_RECORDS_MAX];
static atomic_size_t n_slots;            /* slots ever used: the scans stop there */
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
    atomic_store(&real.write, (write_fn)shim_resolve("write", NULL, (void *)write));
    atomic_store(&real.send, (send_fn)shim_resolve("send", NULL, (void *)send));
    atomic_store(&real.sendto, (sendto_fn)shim_resolve("sendto", NULL, (void *)sendto));
    atomic_store(&real.close, (close_fn)shim_resolve("close", NULL, (void *)close));
    pthread_atfork(stream_lock_acquire, stream_lock_release, stream_lock_release);
}

/*
 * ---- the table ----
 * Filled and read under stream_lock. close() may run in a signal handler or a vfork child, so it takes no lock:
 * it frees a slot with one compare-and-swap on its fd, as record_drop does; a slot is reused only under the
 * lock, with its fd stored last.
 */

static stream_record *record_find(int fd)
{
    size_t n = atomic_load(&n_slots);
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&records[i].fd) == fd)
            return &records[i];
    return NULL;
}

/* Free r if it still holds fd (close() may have freed it meanwhile). */
static void record_drop(stream_record *r, int fd)
{
    if (atomic_compare_exchange_strong(&r->fd, &fd, -1))
        atomic_fetch_sub(&live, 1);
}

static stream_record *record_new(int fd)
{
    size_t n = atomic_load(&n_slots);
    stream_record *r = NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (atomic_load(&records[i].fd) == -1)
            r = &records[i];
    if (r == NULL && n < STREAM_RECORDS_MAX) {
        r = &records[n];
        atomic_store(&r->fd, -1);
        atomic_store(&n_slots, n + 1);
    }
    if (r == NULL)
        return NULL;
    r->tls_began = 0;
    r->to[0] = '\0';
    atomic_fetch_add(&live, 1);
    atomic_store(&r->fd, fd);
    return r;
}

/* The program sent a stream start tag on fd: record its `to` (raw; "" when it had none or it was unreadable). */
static void note_header(int fd, const char *raw)
{
    char to[POSH_MAX_DOMAIN_LEN + 2] = "";
    struct stat st;
    stream_record *r;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return; /* a file that merely holds XML */
    if (raw[0] != '\0' && posh_domain_normalize(raw, to, sizeof(to)) != POSH_OK)
        to[0] = '\0';
    pthread_mutex_lock(&stream_lock);
    r = record_find(fd);
    if (r != NULL && (r->dev != st.st_dev || r->ino != st.st_ino)) {
        record_drop(r, fd); /* the descriptor now names another socket */
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

/*
 * Could this call matter to a record? Inline in every write/send: all most calls cost. A stream header opens
 * with "<s" or "<?" (XML declaration); a TLS record with 0x16 (a handshake) and matters only once a header was
 * recorded.
 */
static inline int worth_a_look(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len < 2 || p == NULL)
        return 0;
    if (p[0] == '<')
        return p[1] == 's' || p[1] == '?';
    return p[0] == 0x16 && atomic_load_explicit(&live, memory_order_relaxed) > 0;
}

/* What one write/send call that passed worth_a_look means for the record. */
static void observe(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    char raw[POSH_MAX_DOMAIN_LEN + 2];

    if (p[0] == 0x16) {
        if (len >= 3 && p[1] == 0x03)
            note_tls(fd);
        return;
    }
    if (shim_stream_header_to((const char *)p, len, raw, sizeof(raw)) != 0)
        note_header(fd, raw);
}

/* The real function, resolving it on a call that comes before the shim's constructor. */
#define REAL(name)                                                                                             \
    __extension__({                                                                                            \
        __typeof__(atomic_load(&real.name)) f_ = atomic_load_explicit(&real.name, memory_order_acquire);       \
        if (__builtin_expect(f_ == NULL, 0)) {                                                                 \
            shim_ready();                                                                                      \
            f_ = atomic_load(&real.name);                                                                      \
        }                                                                                                      \
        f_;                                                                                                    \
    })

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
        record_drop(r, fd); /* consumed by this verification (or stale) */
    }
    pthread_mutex_unlock(&stream_lock);
    return found;
}

/* ---- the interposed functions ---- */

/*
 * The interposed senders. The common call (resolved, nothing worth a look) is a load, a few tests and a tail
 * call, with no stack frame: everything else is in the out-of-line *_slow functions.
 */

static __attribute__((noinline)) ssize_t write_slow(int fd, const void *buf, size_t len)
{
    write_fn f = REAL(write);
    if (worth_a_look(buf, len))
        observe(fd, buf, len);
    return f != NULL ? f(fd, buf, len) : syscall(SYS_write, fd, buf, len);
}

static __attribute__((noinline)) ssize_t send_slow(int fd, const void *buf, size_t len, int flags)
{
    send_fn f = REAL(send);
    if (worth_a_look(buf, len))
        observe(fd, buf, len);
    return f != NULL ? f(fd, buf, len, flags) : syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static __attribute__((noinline)) ssize_t sendto_slow(int fd, const void *buf, size_t len, int flags,
                                                     const struct sockaddr *to, socklen_t tolen)
{
    sendto_fn f = REAL(sendto);
    if (worth_a_look(buf, len))
        observe(fd, buf, len);
    return f != NULL ? f(fd, buf, len, flags, to, tolen) : syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    write_fn f = atomic_load_explicit(&real.write, memory_order_acquire);
    if (__builtin_expect(f != NULL && !worth_a_look(buf, len), 1))
        return f(fd, buf, len);
    return write_slow(fd, buf, len);
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    send_fn f = atomic_load_explicit(&real.send, memory_order_acquire);
    if (__builtin_expect(f != NULL && !worth_a_look(buf, len), 1))
        return f(fd, buf, len, flags);
    return send_slow(fd, buf, len, flags);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                           socklen_t tolen)
{
    sendto_fn f = atomic_load_explicit(&real.sendto, memory_order_acquire);
    if (__builtin_expect(f != NULL && !worth_a_look(buf, len), 1))
        return f(fd, buf, len, flags, to, tolen);
    return sendto_slow(fd, buf, len, flags, to, tolen);
}

SHIM_EXPORT int close(int fd)
{
    close_fn f = REAL(close);
    if (atomic_load_explicit(&live, memory_order_relaxed) > 0) {
        stream_record *r = record_find(fd);  /* no lock: see the table */
        if (r != NULL)
            record_drop(r, fd);
    }
    return f != NULL ? f(fd) : (int)syscall(SYS_close, fd);
}
