/*
 * stream.c - the reference identifier an XMPP program names only in its protocol (RFC 7712 section 5.2: the
 * `to` of the initial stream header). Prosody 0.12 starts STARTTLS on s2s with no SNI and no host name for
 * OpenSSL, but it has just sent `<stream:stream ... to='foo.example.com'>` in plaintext on that socket.
 *
 * A record serves one client-side verification, so only a socket the program itself connected gets one:
 * connect() is interposed and opens the record (a stream socket, identified by descriptor and inode so that a
 * reused descriptor never inherits another socket's record). A stream header the program writes there fills in
 * its `to`; one it writes on any other socket (the reply an XMPP server writes on a stream a peer opened) is
 * never recorded, so a peer cannot fill the table by opening streams. Why connect() and not the header itself:
 * Prosody 0.12 does dial through LuaSocket's connect() (non-blocking, EINPROGRESS) and its replies differ from
 * its own headers only by an `id`, a convention of one program; who called connect() holds for every program,
 * and a socket it cannot vouch for (inherited, passed over a Unix socket, dialled by a raw system call) simply
 * has no record: no POSH, never another socket's name.
 *
 * write(), send() and sendto() are interposed: the real call runs first; while no record exists nothing else
 * happens, and otherwise only the bytes the kernel accepted are looked at (a bad buffer gets the kernel's
 * EFAULT, never a signal from the shim), errno as the call left it; nothing is ever changed. (Those bytes are
 * read just after the kernel read them: only a program that unmaps or truncates a buffer while its own send of
 * it is still returning could still fault here, and it races its own call.)
 * The first TLS handshake record the program sends on a recorded socket decides: a ClientHello after a header
 * with a usable `to` makes the record wait for that handshake's verification, which consumes it; anything else
 * (a ClientHello with no header before it, any other handshake message: the program is the TLS server there)
 * drops it. close() forgets it. The table is bounded per kind of record (RECORD_QUOTA); when a kind is full the
 * newest is still recorded: a record whose handshake began but that no verification consumed (verification off,
 * a resumed session, a peer that never answered the ClientHello) is evicted first, then the one changed longest
 * ago. An evicted record means no POSH for that connection (fail closed).
 *
 * Signal safety: a signal handler may write (write/send/sendto/connect/close are async-signal-safe). Whoever
 * holds the table's lock blocks every signal first, so a handler never runs on a thread inside the locked
 * region; close() takes no lock at all. Nothing here logs (posh_log is not async-signal-safe) except
 * shim_stream_to, which runs in a verification.
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

/*
 * Records of one kind, at most. Only sockets between their connect() and their handshake's verification hold
 * one (or a dialled socket that never starts TLS); an XMPP server with more s2s streams than that all waiting
 * for their handshake at the same moment loses the oldest (fail closed).
 */
#define RECORD_QUOTA 1024

/*
 * Kinds of record, each with its own quota and slots, so that a flood of one kind never evicts another.
 * RECORD_OUT: a socket the program connected, the `to` of the stream header it sent (for its own verification
 * of the server). A later kind (the `from` of the header received on an accepted socket, for a server's
 * verification of its peer's client certificate) gets an entry here and slots of its own.
 */
enum record_kind { RECORD_OUT, RECORD_KINDS };

enum record_state {
    STATE_CONNECTED,   /* connect() seen, no stream header yet */
    STATE_HEADER,      /* a stream header was sent (to: its `to`, "" when it had none usable) */
    STATE_HANDSHAKE,   /* then a ClientHello: waiting for the verification; nothing more is looked at */
};

typedef ssize_t (*write_fn)(int fd, const void *buf, size_t len);
typedef ssize_t (*send_fn)(int fd, const void *buf, size_t len, int flags);
typedef ssize_t (*sendto_fn)(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                             socklen_t tolen);
typedef int (*connect_fn)(int fd, const struct sockaddr *addr, socklen_t len);
typedef int (*close_fn)(int fd);

/* Set once at start-up (shim_ready); read on every call without a lock, hence atomic. */
static struct {
    _Atomic(write_fn) write;
    _Atomic(send_fn) send;
    _Atomic(sendto_fn) sendto;
    _Atomic(connect_fn) connect;
    _Atomic(close_fn) close;
} real;

typedef struct stream_record {
    atomic_int fd;                       /* -1: free slot; cleared without the lock by close() */
    dev_t dev;                           /* the socket's identity: a reused descriptor is another socket */
    ino_t ino;
    enum record_state state;
    unsigned long changed;               /* when it was last opened or given a header: the oldest goes first */
    char to[POSH_MAX_DOMAIN_LEN + 2];    /* normalised; "" when the header had no usable `to` */
} stream_record;

static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    stream_record slot[RECORD_QUOTA];
    atomic_size_t n_slots;               /* slots ever used: the scans stop there */
} tables[RECORD_KINDS];
static atomic_int live;                  /* records held: while 0, nothing sent is looked at */
static unsigned long clock_ticks;        /* under the lock: orders the records' changes */
static atomic_uint evicted;              /* records evicted for room: reported once, by shim_stream_to */
static atomic_int evicted_logged;
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
    atomic_store(&real.connect, (connect_fn)shim_resolve("connect", NULL, (void *)connect));
    atomic_store(&real.close, (close_fn)shim_resolve("close", NULL, (void *)close));
    pthread_atfork(fork_prepare, fork_done, fork_done);
}

/*
 * ---- the table ----
 * Filled and read under stream_lock. close() may run in a signal handler or a vfork child, so it takes no lock:
 * it frees a slot with one compare-and-swap on its fd, as record_drop does; a slot is reused only under the
 * lock, with its fd stored last.
 */

static stream_record *record_find(enum record_kind kind, int fd)
{
    size_t n = atomic_load(&tables[kind].n_slots);
    if (fd < 0)
        return NULL; /* close(-1) is a call like any other: it must not find a free slot */
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&tables[kind].slot[i].fd) == fd)
            return &tables[kind].slot[i];
    return NULL;
}

/* Free r if it still holds fd (close() may have freed it meanwhile). */
static void record_drop(stream_record *r, int fd)
{
    if (fd >= 0 && atomic_compare_exchange_strong(&r->fd, &fd, -1))
        atomic_fetch_sub(&live, 1);
}

/*
 * A slot for a new record of kind: a free one, else one never used, else the one to evict: a record whose
 * handshake began and was not consumed (it will most likely never be), else the one changed longest ago. The
 * newest is always recorded: a full table must not refuse the stream about to need its record because older
 * ones, which a peer may be holding open on purpose, were there first.
 */
static stream_record *record_slot(enum record_kind kind)
{
    size_t n = atomic_load(&tables[kind].n_slots);
    stream_record *victim = NULL;

    for (size_t i = 0; i < n; i++) {
        stream_record *r = &tables[kind].slot[i];
        if (atomic_load(&r->fd) == -1)
            return r;
        if (victim == NULL || (r->state == STATE_HANDSHAKE) > (victim->state == STATE_HANDSHAKE) ||
            ((r->state == STATE_HANDSHAKE) == (victim->state == STATE_HANDSHAKE) && r->changed < victim->changed))
            victim = r;
    }
    if (n < RECORD_QUOTA) {
        /* Free before the lock-free scans of close() can reach it. */
        atomic_store(&tables[kind].slot[n].fd, -1);
        atomic_store(&tables[kind].n_slots, n + 1);
        return &tables[kind].slot[n];
    }
    record_drop(victim, atomic_load(&victim->fd)); /* free now, whether by us or by a close() meanwhile */
    atomic_fetch_add(&evicted, 1);
    return victim;
}

/* The program connected fd: open its record (replacing one the descriptor had as another socket). */
static void note_connect(int fd)
{
    struct stat st;
    int type;
    socklen_t len = sizeof(type);
    sigset_t saved;
    stream_record *r;

    /* XMPP runs over TCP; a connected datagram socket (the resolver's) can never carry a stream. */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM || fstat(fd, &st) != 0)
        return;
    table_lock(&saved);
    if ((r = record_find(RECORD_OUT, fd)) != NULL)
        record_drop(r, fd);
    r = record_slot(RECORD_OUT);
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->state = STATE_CONNECTED;
    r->changed = ++clock_ticks;
    r->to[0] = '\0';
    atomic_fetch_add(&live, 1);
    atomic_store(&r->fd, fd);
    table_unlock(&saved);
}

/*
 * The record of fd, under the lock, if fd still names the socket the record was opened for (else the record is
 * dropped: the descriptor was reused by dup2() or closed behind the shim's back).
 */
static stream_record *record_of(int fd, const struct stat *st)
{
    stream_record *r = record_find(RECORD_OUT, fd);
    if (r != NULL && (r->dev != st->st_dev || r->ino != st->st_ino)) {
        record_drop(r, fd);
        r = NULL;
    }
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
    /* No record: a socket the program did not connect (a reply to a peer's stream), or one evicted. */
    if ((r = record_of(fd, &st)) != NULL && r->state != STATE_HANDSHAKE) {
        r->state = STATE_HEADER;
        r->changed = ++clock_ticks;
        memcpy(r->to, to, sizeof(r->to));
    }
    table_unlock(&saved);
}

/* The program sent a TLS handshake record on fd (hello: it is a ClientHello): see the header comment. */
static void note_tls(int fd, int hello)
{
    struct stat st;
    sigset_t saved;
    stream_record *r;

    if (fstat(fd, &st) != 0)
        return;
    table_lock(&saved);
    if ((r = record_of(fd, &st)) != NULL && r->state != STATE_HANDSHAKE) {
        if (hello && r->state == STATE_HEADER && r->to[0] != '\0')
            r->state = STATE_HANDSHAKE;
        else
            record_drop(r, fd);
    }
    table_unlock(&saved);
}

/*
 * Could what the kernel just accepted (ret bytes of p) matter to a record? Inline after every successful
 * write/send: all most calls cost. Only while records exist; a stream header opens with "<s" or "<?" (XML
 * declaration), a TLS handshake record with 0x16. Reads p only within the ret bytes the kernel read.
 */
static inline int worth_a_look(const void *p, ssize_t ret)
{
    const unsigned char *b = p;
    if (ret < 2 || atomic_load_explicit(&live, memory_order_relaxed) == 0)
        return 0;
    if (b[0] == '<')
        return b[1] == 's' || b[1] == '?';
    return b[0] == 0x16;
}

/*
 * What the ret bytes the program sent on fd mean for its record; returns ret, errno as the call left it (the
 * hooks tail-call it: nothing to keep across it).
 */
static __attribute__((noinline)) ssize_t observe(int fd, const void *buf, ssize_t ret)
{
    const unsigned char *p = buf;
    size_t len = (size_t)ret;
    char raw[POSH_MAX_DOMAIN_LEN + 2];
    int saved_errno = errno;

    if (p[0] == 0x16) {
        /* A TLS record header (type, version 3.x, length) and the handshake message's type: 1 ClientHello. */
        if (p[1] == 0x03)
            note_tls(fd, len >= 6 && p[5] == 0x01);
    } else if (shim_stream_header_to((const char *)p, len, raw, sizeof(raw)) != 0) {
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
    unsigned n_evicted;

    out[0] = '\0';
    if ((n_evicted = atomic_load(&evicted)) != 0 && atomic_exchange(&evicted_logged, 1) == 0)
        posh_log(POSH_LOG_WARNING, "more than %d sockets the program connected awaited their TLS handshake at "
                 "once: the oldest stream records were evicted, those connections get no POSH (%u so far; "
                 "logged once)", RECORD_QUOTA, n_evicted);
    if (atomic_load(&live) == 0 || fd < 0 || fstat(fd, &st) != 0)
        return 0;
    table_lock(&saved);
    if ((r = record_of(fd, &st)) != NULL) {
        if (r->state != STATE_CONNECTED && r->to[0] != '\0' && strlen(r->to) < outlen) {
            memcpy(out, r->to, strlen(r->to) + 1);
            found = 1;
        }
        record_drop(r, fd); /* consumed by this verification */
    }
    table_unlock(&saved);
    return found;
}

/* ---- the interposed functions ---- */

/*
 * The senders. While no record exists (live == 0) nothing sent can matter: the call is two loads, two tests
 * and a tail call to the real function, and the buffer is never touched. Otherwise the real function runs
 * first and only what the kernel accepted is looked at. A record cannot appear for fd during the call: only
 * connect() on fd opens one, and the program sends on fd after connect() returned. A call that comes before
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

static inline int no_records(void)
{
    return atomic_load_explicit(&live, memory_order_relaxed) == 0;
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    write_fn f = atomic_load_explicit(&real.write, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return write_unresolved(fd, buf, len);
    if (__builtin_expect(no_records(), 1))
        return f(fd, buf, len);
    ret = f(fd, buf, len);
    return __builtin_expect(worth_a_look(buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    send_fn f = atomic_load_explicit(&real.send, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return sendto_unresolved(fd, buf, len, flags, NULL, 0);
    if (__builtin_expect(no_records(), 1))
        return f(fd, buf, len, flags);
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
    if (__builtin_expect(no_records(), 1))
        return f(fd, buf, len, flags, to, tolen);
    ret = f(fd, buf, len, flags, to, tolen);
    return __builtin_expect(worth_a_look(buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

/*
 * connect() opens a record when the call began a connection: it succeeded, or it goes on in the background
 * (EINPROGRESS: non-blocking, as Prosody's LuaSocket does it; EINTR: a blocking one interrupted; EALREADY: one
 * begun before). Never on EISCONN, which an accepted socket answers: that socket is not the program's stream.
 */
SHIM_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    connect_fn f = REAL(connect);
    int ret = f != NULL ? f(fd, addr, len) : (int)syscall(SYS_connect, fd, addr, len);
    int saved_errno = errno;
    if (ret == 0 || saved_errno == EINPROGRESS || saved_errno == EINTR || saved_errno == EALREADY) {
        note_connect(fd);
        errno = saved_errno;
    }
    return ret;
}

SHIM_EXPORT int close(int fd)
{
    close_fn f = REAL(close);
    if (fd >= 0 && atomic_load_explicit(&live, memory_order_relaxed) > 0) {
        for (int k = 0; k < RECORD_KINDS; k++) {
            stream_record *r = record_find((enum record_kind)k, fd);  /* no lock: see the table */
            if (r != NULL)
                record_drop(r, fd);
        }
    }
    return f != NULL ? f(fd) : (int)syscall(SYS_close, fd);
}
