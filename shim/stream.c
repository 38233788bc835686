/*
 * stream.c - the reference identifier an XMPP program names only in its protocol (RFC 7712 section 5.2: the
 * `to` of the initial stream header). Prosody 0.12 starts STARTTLS on s2s with no SNI and no host name for
 * OpenSSL, but it has just sent `<stream:stream ... to='foo.example.com'>` in plaintext on that socket.
 *
 * write(), send() and sendto() are interposed. The real call runs first, and only the bytes the kernel accepted
 * are looked at (a bad buffer gets the kernel's EFAULT, never a signal from the shim), errno as the call left
 * it; a call whose accepted bytes do not start with '<' (or, once a header was recorded, with a TLS handshake
 * record) costs a one-byte test; nothing the program sends is ever changed. (Those bytes are read just after
 * the kernel read them: only a program that unmaps or truncates a buffer while its own send of it is still
 * returning could still fault here, and it races its own call.) A call whose data opens with a stream start
 * tag (stream_header.c reads it)
 * on a socket has its `to` recorded for that socket, identified by descriptor and inode so that a reused
 * descriptor never inherits another socket's record. Nothing is looked at once the program sent a TLS
 * handshake record on the socket (its handshake began), the record is consumed by that handshake's
 * verification, and close() forgets it. The table is bounded; when full, a new header is not recorded (that
 * connection then gets no POSH: fail closed).
 *
 * Signal safety: a signal handler may write (write/send/sendto/close are async-signal-safe). Whoever holds the
 * table's lock blocks every signal first, so a handler never runs on a thread inside the locked region; close()
 * takes no lock at all. Nothing here logs (posh_log is not async-signal-safe) except shim_stream_to, which runs
 * in a verification.
 */
#include "shim_internal.h"
#include "stream_header.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
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
static atomic_int refused;               /* headers not recorded for want of room: logged by shim_stream_to */
static atomic_int full_logged;
static sigset_t fork_saved_mask;         /* the forking thread's mask, held with the lock across fork() */

/*
 * The lock, with every signal blocked for as long as it is held: a handler that sends a stream header on
 * this thread would otherwise wait forever for a lock its own thread holds.
 */
static void table_lock(sigset_t *saved)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, saved);
    pthread_mutex_lock(&stream_lock);
}

static void table_unlock(const sigset_t *saved)
{
    pthread_mutex_unlock(&stream_lock);
    pthread_sigmask(SIG_SETMASK, saved, NULL);
}

/* fork(): the table is copied in a consistent state, and the lock is held as table_lock holds it. */
static void fork_prepare(void)
{
    sigset_t saved;
    table_lock(&saved);
    fork_saved_mask = saved;
}

static void fork_done(void)
{
    sigset_t saved = fork_saved_mask;
    table_unlock(&saved);
}

void shim_stream_init(void)
{
    atomic_store(&real.write, (write_fn)shim_resolve("write", NULL, (void *)write));
    atomic_store(&real.send, (send_fn)shim_resolve("send", NULL, (void *)send));
    atomic_store(&real.sendto, (sendto_fn)shim_resolve("sendto", NULL, (void *)sendto));
    atomic_store(&real.close, (close_fn)shim_resolve("close", NULL, (void *)close));
    pthread_atfork(fork_prepare, fork_done, fork_done);
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
    if (fd < 0)
        return NULL; /* close(-1) is a call like any other: it must not find a free slot */
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&records[i].fd) == fd)
            return &records[i];
    return NULL;
}

/* Free r if it still holds fd (close() may have freed it meanwhile). */
static void record_drop(stream_record *r, int fd)
{
    if (fd >= 0 && atomic_compare_exchange_strong(&r->fd, &fd, -1))
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
    sigset_t saved;
    stream_record *r;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return; /* a file that merely holds XML */
    if (raw[0] != '\0' && posh_domain_normalize(raw, to, sizeof(to)) != POSH_OK)
        to[0] = '\0';
    table_lock(&saved);
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
    table_unlock(&saved);
    if (r == NULL)
        atomic_store(&refused, 1);
}

/* The program began a TLS handshake on fd: from now on nothing it sends there is looked at. */
static void note_tls(int fd)
{
    stream_record *r;
    sigset_t saved;
    table_lock(&saved);
    if ((r = record_find(fd)) != NULL)
        r->tls_began = 1;
    table_unlock(&saved);
}

/*
 * Could what the kernel just accepted (ret bytes of buf) matter to a record? Inline after every write/send: all
 * most calls cost. A stream header opens with "<s" or "<?" (XML declaration); a TLS record with 0x16 (a
 * handshake) and matters only once a header was recorded. Reads buf only within the ret bytes the kernel read.
 */
static inline int worth_a_look(const void *buf, ssize_t ret)
{
    const unsigned char *p = buf;
    if (ret < 2)
        return 0;
    if (p[0] == '<')
        return p[1] == 's' || p[1] == '?';
    return p[0] == 0x16 && atomic_load_explicit(&live, memory_order_relaxed) > 0;
}

/*
 * What the ret bytes of one call that passed worth_a_look mean for the record; returns ret, errno as the call
 * left it (the hooks tail-call it: nothing to keep across it).
 */
static __attribute__((noinline)) ssize_t observe(int fd, const void *buf, ssize_t ret)
{
    const unsigned char *p = buf;
    char raw[POSH_MAX_DOMAIN_LEN + 2];
    int saved_errno = errno;

    if (p[0] == 0x16) {
        if (ret >= 3 && p[1] == 0x03)
            note_tls(fd);
    } else if (shim_stream_header_to((const char *)p, (size_t)ret, raw, sizeof(raw)) != 0) {
        note_header(fd, raw);
    }
    errno = saved_errno;
    return ret;
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
    sigset_t saved;
    stream_record *r;
    int found = 0;

    out[0] = '\0';
    if (atomic_load(&refused) && atomic_exchange(&full_logged, 1) == 0)
        posh_log(POSH_LOG_WARNING, "%d sockets with an XMPP stream header await their handshake: a further "
                 "one gets no POSH (logged once)", STREAM_RECORDS_MAX);
    if (atomic_load(&live) == 0 || fd < 0 || fstat(fd, &st) != 0)
        return 0;
    table_lock(&saved);
    if ((r = record_find(fd)) != NULL) {
        if (r->dev == st.st_dev && r->ino == st.st_ino && r->to[0] != '\0' && strlen(r->to) < outlen) {
            memcpy(out, r->to, strlen(r->to) + 1);
            found = 1;
        }
        record_drop(r, fd); /* consumed by this verification (or stale) */
    }
    table_unlock(&saved);
    return found;
}

/* ---- the interposed functions ---- */

/*
 * The interposed senders: the real function first, then a look at what the kernel accepted. The common call
 * (resolved, nothing worth a look) is a load, the call and a few tests on its result; a call that comes before
 * the shim's constructor resolves the real function out of line (*_unresolved).
 */

static __attribute__((noinline)) ssize_t write_unresolved(int fd, const void *buf, size_t len)
{
    write_fn f = REAL(write);
    ssize_t ret = f != NULL ? f(fd, buf, len) : syscall(SYS_write, fd, buf, len);
    return worth_a_look(buf, ret) ? observe(fd, buf, ret) : ret;
}

static __attribute__((noinline)) ssize_t sendto_unresolved(int fd, const void *buf, size_t len, int flags,
                                                           const struct sockaddr *to, socklen_t tolen)
{
    sendto_fn f = REAL(sendto);
    ssize_t ret = f != NULL ? f(fd, buf, len, flags, to, tolen) : syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
    return worth_a_look(buf, ret) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    write_fn f = atomic_load_explicit(&real.write, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return write_unresolved(fd, buf, len);
    ret = f(fd, buf, len);
    return __builtin_expect(worth_a_look(buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    send_fn f = atomic_load_explicit(&real.send, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return sendto_unresolved(fd, buf, len, flags, NULL, 0);
    ret = f(fd, buf, len, flags);
    return __builtin_expect(worth_a_look(buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                           socklen_t tolen)
{
    sendto_fn f = atomic_load_explicit(&real.sendto, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return sendto_unresolved(fd, buf, len, flags, to, tolen);
    ret = f(fd, buf, len, flags, to, tolen);
    return __builtin_expect(worth_a_look(buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT int close(int fd)
{
    close_fn f = REAL(close);
    if (fd >= 0 && atomic_load_explicit(&live, memory_order_relaxed) > 0) {
        stream_record *r = record_find(fd);  /* no lock: see the table */
        if (r != NULL)
            record_drop(r, fd);
    }
    return f != NULL ? f(fd) : (int)syscall(SYS_close, fd);
}
