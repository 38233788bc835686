/*
 * stream.c - the reference identifier an XMPP program names only in its protocol (RFC 7712 section 5.2: the
 * `to` of the initial stream header). Prosody 0.12 starts STARTTLS on s2s with no SNI and no host name for
 * OpenSSL, but it has just sent `<stream:stream ... to='foo.example.com'>` in plaintext on that socket.
 *
 * A record serves one client-side verification, so only a socket the program itself connected gets one:
 * connect() is interposed and opens the record (a stream socket, identified by descriptor and inode so that a
 * reused descriptor never inherits another socket's record), once the service rule is known (the first
 * verification) only where the connection can be XMPP: POSH_SERVICE names an XMPP service, or it is unset and
 * the port is 5222 or 5269 (shim_connect_may_be_xmpp); any other connection costs connect() nothing more. A
 * stream header the program writes there fills in its `to`; one it writes on any other socket (the reply an XMPP server writes on a stream a peer opened) is
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
 * The receiving side (RECORD_IN, its own quota): the identity a peer claims on an XMPP s2s stream it opened to
 * the program (RFC 7712 section 5: the `from` of its stream header), for the program's verification of the
 * peer's client certificate. accept()/accept4() open the record (only for XMPP s2s: POSH_SERVICE xmpp-server, or
 * local port 5269 when it is unset); read(), recv() and recvfrom() run the real call first and then look only at
 * the bytes the kernel stored, with the same rules: a stream header fills in `from`, the peer's first TLS record
 * ends the looking, close() forgets. The early lookup (SSL_set_fd, at the end of this file, opt-in) starts the
 * lookup for either name once the program hands the socket to OpenSSL.
 *
 * Signal safety: a signal handler may write (write/send/sendto/connect/close are async-signal-safe). Whoever
 * holds the table's lock blocks every signal first, so a handler never runs on a thread inside the locked
 * region; close() takes no lock at all. Nothing here logs (posh_log is not async-signal-safe) except
 * shim_stream_to, which runs in a verification.
 */
#include "shim_internal.h"
#include "stream_header.h"

#include <dlfcn.h>
#include <openssl/err.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
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
 * of the server). RECORD_IN: an XMPP s2s socket the program accepted, the `from` of the stream header its peer
 * sent (for the program's verification of that peer's client certificate).
 */
enum record_kind { RECORD_OUT, RECORD_IN, RECORD_KINDS };

enum record_state {
    STATE_CONNECTED,   /* connect() (RECORD_IN: accept()) seen, no stream header yet */
    STATE_HEADER,      /* a stream header was sent (RECORD_IN: received); name: its `to` (`from`), "" if unusable */
    STATE_HANDSHAKE,   /* then a ClientHello: waiting for the verification; nothing more is looked at */
};

typedef ssize_t (*write_fn)(int fd, const void *buf, size_t len);
typedef ssize_t (*send_fn)(int fd, const void *buf, size_t len, int flags);
typedef ssize_t (*sendto_fn)(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                             socklen_t tolen);
typedef int (*connect_fn)(int fd, const struct sockaddr *addr, socklen_t len);
typedef int (*close_fn)(int fd);
typedef int (*set_fd_fn)(SSL *ssl, int fd);
typedef ssize_t (*read_fn)(int fd, void *buf, size_t len);
typedef ssize_t (*recv_fn)(int fd, void *buf, size_t len, int flags);
typedef ssize_t (*recvfrom_fn)(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen);
typedef int (*accept_fn)(int fd, struct sockaddr *addr, socklen_t *len);
typedef int (*accept4_fn)(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/* Set once at start-up (shim_ready); read on every call without a lock, hence atomic. */
static struct {
    _Atomic(write_fn) write;
    _Atomic(send_fn) send;
    _Atomic(sendto_fn) sendto;
    _Atomic(connect_fn) connect;
    _Atomic(close_fn) close;
    _Atomic(read_fn) read;
    _Atomic(recv_fn) recv;
    _Atomic(recvfrom_fn) recvfrom;
    _Atomic(accept_fn) accept;
    _Atomic(accept4_fn) accept4;
} real;

typedef struct stream_record {
    atomic_int fd;                       /* -1: free slot; cleared without the lock by close() */
    dev_t dev;                           /* the socket's identity: a reused descriptor is another socket */
    ino_t ino;
    enum record_state state;
    unsigned long changed;               /* when it was last opened or given a header: the oldest goes first */
    int early;                           /* the early lookup of name was started (SSL_set_fd) */
    char name[POSH_MAX_DOMAIN_LEN + 2];  /* the header's `to` (RECORD_IN: `from`), normalised; "" if unusable */
} stream_record;

static int set_fd_foreign;                  /* the program's SSL_set_fd is not OpenSSL's: no early lookup */
static _Atomic(set_fd_fn) real_set_fd;      /* SSL_set_fd: the early lookup (at the end of this file) */
static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    stream_record slot[RECORD_QUOTA];
    atomic_size_t n_slots;               /* slots ever used: the scans stop there */
} tables[RECORD_KINDS];
static atomic_int live[RECORD_KINDS];    /* records held per kind: while 0, nothing sent (received) is looked at */
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
    atomic_store(&real.read, (read_fn)shim_resolve("read", NULL, (void *)read));
    atomic_store(&real.recv, (recv_fn)shim_resolve("recv", NULL, (void *)recv));
    atomic_store(&real.recvfrom, (recvfrom_fn)shim_resolve("recvfrom", NULL, (void *)recvfrom));
    atomic_store(&real.accept, (accept_fn)shim_resolve("accept", NULL, (void *)accept));
    atomic_store(&real.accept4, (accept4_fn)shim_resolve("accept4", NULL, (void *)accept4));
    /* A program whose SSL_set_fd is another library's (GnuTLS's compatibility layer) gets it, untouched. */
    atomic_store(&real_set_fd,
                 (set_fd_fn)shim_resolve_openssl_or_own("SSL_set_fd", (void *)SSL_set_fd, &set_fd_foreign));
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

/* Free r, a record of kind, if it still holds fd (close() may have freed it meanwhile). */
static void record_drop(enum record_kind kind, stream_record *r, int fd)
{
    if (fd >= 0 && atomic_compare_exchange_strong(&r->fd, &fd, -1))
        atomic_fetch_sub(&live[kind], 1);
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
    record_drop(kind, victim, atomic_load(&victim->fd)); /* free now, whether by us or by a close() meanwhile */
    atomic_fetch_add(&evicted, 1);
    return victim;
}

/* The program connected (kind RECORD_OUT) or accepted (RECORD_IN) fd: open its record (replacing one the
 * descriptor had as another socket, of either kind). */
static void note_open(enum record_kind kind, int fd)
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
    for (int k = 0; k < RECORD_KINDS; k++)
        if ((r = record_find((enum record_kind)k, fd)) != NULL)
            record_drop((enum record_kind)k, r, fd);
    r = record_slot(kind);
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->state = STATE_CONNECTED;
    r->changed = ++clock_ticks;
    r->early = 0;
    r->name[0] = '\0';
    atomic_fetch_add(&live[kind], 1);
    atomic_store(&r->fd, fd);
    table_unlock(&saved);
}

/*
 * The record of fd, under the lock, if fd still names the socket the record was opened for (else the record is
 * dropped: the descriptor was reused by dup2() or closed behind the shim's back).
 */
static stream_record *record_of(enum record_kind kind, int fd, const struct stat *st)
{
    stream_record *r = record_find(kind, fd);
    if (r != NULL && (r->dev != st->st_dev || r->ino != st->st_ino)) {
        record_drop(kind, r, fd);
        r = NULL;
    }
    return r;
}

/*
 * A stream start tag went over fd (RECORD_OUT: the program sent it, raw is its `to`; RECORD_IN: the peer sent it,
 * raw is its `from`): record the name (raw; "" when it had none or it was unreadable).
 */
static void note_header(enum record_kind kind, int fd, const char *raw)
{
    char name[POSH_MAX_DOMAIN_LEN + 2] = "";
    struct stat st;
    sigset_t saved;
    stream_record *r;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return; /* a file that merely holds XML */
    if (raw[0] != '\0' && posh_domain_normalize(raw, name, sizeof(name)) != POSH_OK)
        name[0] = '\0';
    table_lock(&saved);
    /* No record: a socket the program did not connect (accept), or one evicted. */
    if ((r = record_of(kind, fd, &st)) != NULL && r->state != STATE_HANDSHAKE) {
        r->state = STATE_HEADER;
        r->changed = ++clock_ticks;
        r->early = 0;
        memcpy(r->name, name, sizeof(r->name));
    }
    table_unlock(&saved);
}

/*
 * A TLS handshake record went over fd (hello: it is a ClientHello; RECORD_IN: the peer's, whose type the shim
 * may not see, OpenSSL reading the record header alone first): see the header comment.
 */
static void note_tls(enum record_kind kind, int fd, int hello)
{
    struct stat st;
    sigset_t saved;
    stream_record *r;

    if (fstat(fd, &st) != 0)
        return;
    table_lock(&saved);
    if ((r = record_of(kind, fd, &st)) != NULL && r->state != STATE_HANDSHAKE) {
        if (hello && r->state == STATE_HEADER && r->name[0] != '\0')
            r->state = STATE_HANDSHAKE;
        else
            record_drop(kind, r, fd);
    }
    table_unlock(&saved);
}

/*
 * Could what the kernel just accepted (ret bytes of p) matter to a record? Inline after every successful
 * write/send: all most calls cost. Only while records exist; a stream header opens with "<s" or "<?" (XML
 * declaration), a TLS handshake record with 0x16. Reads p only within the ret bytes the kernel read.
 */
static inline int worth_a_look(enum record_kind kind, const void *p, ssize_t ret)
{
    const unsigned char *b = p;
    if (ret < 2 || atomic_load_explicit(&live[kind], memory_order_relaxed) == 0)
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
            note_tls(RECORD_OUT, fd, len >= 6 && p[5] == 0x01);
    } else if (shim_stream_header_to((const char *)p, len, raw, sizeof(raw)) != 0) {
        note_header(RECORD_OUT, fd, raw);
    }
    errno = saved_errno;
    return ret;
}

/*
 * What the ret bytes the program received on fd mean for its RECORD_IN; returns ret, errno as the call left it.
 * The peer's TLS handshake begins with its ClientHello (OpenSSL reads the 5-byte record header alone first, so
 * the message type is not looked for); a handshake record before any header drops the record.
 */
static __attribute__((noinline)) ssize_t observe_received(int fd, const void *buf, ssize_t ret)
{
    const unsigned char *p = buf;
    char to[2], from[POSH_MAX_DOMAIN_LEN + 2];
    int saved_errno = errno;

    if (p[0] == 0x16) {
        if (p[1] == 0x03)
            note_tls(RECORD_IN, fd, 1);
    } else if (shim_stream_header((const char *)p, (size_t)ret, to, sizeof(to), from, sizeof(from)) != 0) {
        note_header(RECORD_IN, fd, from);
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

static int record_take(enum record_kind kind, int fd, char *out, size_t outlen);

/* Evictions are counted in the hooks (no logging there) and reported here, in a verification, once. */
static void log_evictions(void)
{
    unsigned n_evicted;
    if ((n_evicted = atomic_load(&evicted)) != 0 && atomic_exchange(&evicted_logged, 1) == 0)
        posh_log(POSH_LOG_WARNING, "more than %d sockets of one kind (dialled, or accepted XMPP s2s) awaited "
                 "their TLS handshake at once: the oldest stream records were evicted, those connections get no "
                 "POSH (%u so far; logged once)", RECORD_QUOTA, n_evicted);
}

int shim_stream_to(SSL *ssl, char *out, size_t outlen)
{
    int fd = SSL_get_wfd(ssl);

    out[0] = '\0';
    log_evictions();
    return record_take(RECORD_OUT, fd, out, outlen);
}

/* The name of fd's record of kind, if it is waiting for its verification; the record is consumed. 1 found. */
static int record_take(enum record_kind kind, int fd, char *out, size_t outlen)
{
    struct stat st;
    sigset_t saved;
    stream_record *r;
    int found = 0;

    if (atomic_load(&live[kind]) == 0 || fd < 0 || fstat(fd, &st) != 0)
        return 0;
    table_lock(&saved);
    if ((r = record_of(kind, fd, &st)) != NULL) {
        if (r->state != STATE_CONNECTED && r->name[0] != '\0' && strlen(r->name) < outlen) {
            memcpy(out, r->name, strlen(r->name) + 1);
            found = 1;
        }
        record_drop(kind, r, fd); /* consumed by this verification */
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
    return worth_a_look(RECORD_OUT, buf, ret) ? observe(fd, buf, ret) : ret;
}

static __attribute__((noinline)) ssize_t sendto_unresolved(int fd, const void *buf, size_t len, int flags,
                                                           const struct sockaddr *to, socklen_t tolen)
{
    sendto_fn f = REAL(sendto);
    ssize_t ret = f != NULL ? f(fd, buf, len, flags, to, tolen) : syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
    return worth_a_look(RECORD_OUT, buf, ret) ? observe(fd, buf, ret) : ret;
}

static inline int no_records(enum record_kind kind)
{
    return atomic_load_explicit(&live[kind], memory_order_relaxed) == 0;
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    write_fn f = atomic_load_explicit(&real.write, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return write_unresolved(fd, buf, len);
    if (__builtin_expect(no_records(RECORD_OUT), 1))
        return f(fd, buf, len);
    ret = f(fd, buf, len);
    return __builtin_expect(worth_a_look(RECORD_OUT, buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    send_fn f = atomic_load_explicit(&real.send, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return sendto_unresolved(fd, buf, len, flags, NULL, 0);
    if (__builtin_expect(no_records(RECORD_OUT), 1))
        return f(fd, buf, len, flags);
    ret = f(fd, buf, len, flags);
    return __builtin_expect(worth_a_look(RECORD_OUT, buf, ret), 0) ? observe(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                           socklen_t tolen)
{
    sendto_fn f = atomic_load_explicit(&real.sendto, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return sendto_unresolved(fd, buf, len, flags, to, tolen);
    if (__builtin_expect(no_records(RECORD_OUT), 1))
        return f(fd, buf, len, flags, to, tolen);
    ret = f(fd, buf, len, flags, to, tolen);
    return __builtin_expect(worth_a_look(RECORD_OUT, buf, ret), 0) ? observe(fd, buf, ret) : ret;
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
    /* Only a connection that can be XMPP is recorded: for any other, no system call and no table. */
    if ((ret == 0 || saved_errno == EINPROGRESS || saved_errno == EINTR || saved_errno == EALREADY) &&
        shim_connect_may_be_xmpp(addr, len)) {
        note_open(RECORD_OUT, fd);
        errno = saved_errno;
    }
    return ret;
}

SHIM_EXPORT int close(int fd)
{
    close_fn f = REAL(close);
    for (int k = 0; fd >= 0 && k < RECORD_KINDS; k++) {
        if (atomic_load_explicit(&live[k], memory_order_relaxed) > 0) {
            stream_record *r = record_find((enum record_kind)k, fd);  /* no lock: see the table */
            if (r != NULL)
                record_drop((enum record_kind)k, r, fd);
        }
    }
    return f != NULL ? f(fd) : (int)syscall(SYS_close, fd);
}

/* ---- the receiving side: the `from` of the header a peer sent on a socket the program accepted ---- */

/*
 * Which accepted sockets get a record: those of XMPP server-to-server, the one protocol whose peer names itself
 * in plaintext before its handshake (RFC 7712 section 5: the `from` of its stream header). POSH_SERVICE, when set,
 * decides for every socket as it does for the verification (shim.c); unset, the local port 5269 does. Read once,
 * without a lock and without logging (accept() may run in a signal handler): every thread computes the same.
 */
enum { INCOMING_UNKNOWN, INCOMING_PORT, INCOMING_ALL, INCOMING_NONE };
static atomic_int incoming_rule;

static int incoming_rule_get(void)
{
    int rule = atomic_load_explicit(&incoming_rule, memory_order_relaxed);
    const char *v;
    if (rule != INCOMING_UNKNOWN)
        return rule;
    v = secure_getenv("POSH_SERVICE");
    if (v == NULL)
        rule = INCOMING_PORT;
    else if (strcmp(v, "xmpp-server") == 0 || strcmp(v, "_xmpp-server._tcp") == 0)
        rule = INCOMING_ALL;
    else
        rule = INCOMING_NONE; /* another service, or an invalid value (shim.c then turns POSH off) */
    atomic_store_explicit(&incoming_rule, rule, memory_order_relaxed);
    return rule;
}

static int local_port_is_s2s(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port) == 5269;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 5269;
    return 0;
}

static void note_accept(int fd)
{
    int rule = incoming_rule_get();
    if (rule == INCOMING_ALL || (rule == INCOMING_PORT && local_port_is_s2s(fd)))
        note_open(RECORD_IN, fd);
}

int shim_stream_from(SSL *ssl, char *out, size_t outlen)
{
    int fd = SSL_get_rfd(ssl);
    out[0] = '\0';
    log_evictions();
    return record_take(RECORD_IN, fd, out, outlen);
}

/*
 * The receivers, as the senders: while no accepted socket holds a record, the call is a load, a test and a tail
 * call. Otherwise the real function runs first and only the bytes it stored are looked at. A record cannot appear
 * for fd during the call: only accept() returning fd opens one, before the program reads from fd.
 */
static __attribute__((noinline)) ssize_t read_unresolved(int fd, void *buf, size_t len)
{
    read_fn f = REAL(read);
    ssize_t ret = f != NULL ? f(fd, buf, len) : syscall(SYS_read, fd, buf, len);
    return worth_a_look(RECORD_IN, buf, ret) ? observe_received(fd, buf, ret) : ret;
}

static __attribute__((noinline)) ssize_t recvfrom_unresolved(int fd, void *buf, size_t len, int flags,
                                                             struct sockaddr *from, socklen_t *fromlen)
{
    recvfrom_fn f = REAL(recvfrom);
    ssize_t ret = f != NULL ? f(fd, buf, len, flags, from, fromlen)
                            : syscall(SYS_recvfrom, fd, buf, len, flags, from, fromlen);
    return worth_a_look(RECORD_IN, buf, ret) ? observe_received(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    read_fn f = atomic_load_explicit(&real.read, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return read_unresolved(fd, buf, len);
    if (__builtin_expect(no_records(RECORD_IN), 1))
        return f(fd, buf, len);
    ret = f(fd, buf, len);
    return __builtin_expect(worth_a_look(RECORD_IN, buf, ret), 0) ? observe_received(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    recv_fn f = atomic_load_explicit(&real.recv, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return recvfrom_unresolved(fd, buf, len, flags, NULL, NULL);
    if (__builtin_expect(no_records(RECORD_IN), 1))
        return f(fd, buf, len, flags);
    ret = f(fd, buf, len, flags);
    return __builtin_expect(worth_a_look(RECORD_IN, buf, ret), 0) ? observe_received(fd, buf, ret) : ret;
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    recvfrom_fn f = atomic_load_explicit(&real.recvfrom, memory_order_acquire);
    ssize_t ret;
    if (__builtin_expect(f == NULL, 0))
        return recvfrom_unresolved(fd, buf, len, flags, from, fromlen);
    if (__builtin_expect(no_records(RECORD_IN), 1))
        return f(fd, buf, len, flags, from, fromlen);
    ret = f(fd, buf, len, flags, from, fromlen);
    return __builtin_expect(worth_a_look(RECORD_IN, buf, ret), 0) ? observe_received(fd, buf, ret) : ret;
}

/* accept() and accept4() open a record for an XMPP s2s socket (see incoming_rule); errno as the call left it. */
SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    accept_fn f = REAL(accept);
    int ret = f != NULL ? f(fd, addr, len) : (int)syscall(SYS_accept, fd, addr, len);
    int saved_errno = errno;
    if (ret >= 0) {
        note_accept(ret);
        errno = saved_errno;
    }
    return ret;
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    accept4_fn f = REAL(accept4);
    int ret = f != NULL ? f(fd, addr, len, flags) : (int)syscall(SYS_accept4, fd, addr, len, flags);
    int saved_errno = errno;
    if (ret >= 0) {
        note_accept(ret);
        errno = saved_errno;
    }
    return ret;
}

/* ---- the early lookup: started when the program hands a recorded socket to OpenSSL ---- */

static pthread_once_t early_once = PTHREAD_ONCE_INIT;
static int early_on;

/*
 * POSH_PREFETCH: 1 or 0 (the default); anything else is logged and means 0 (the early lookup is only a head
 * start). Opt-in because it speculates: the name is looked up before the certificate is seen, so a stream whose
 * certificate carries the name costs a request it would not need (a matching name otherwise never makes one).
 */
static void early_read_env(void)
{
    const char *v = posh_getenv("POSH_PREFETCH");
    if (v == NULL || strcmp(v, "0") == 0)
        return;
    if (strcmp(v, "1") == 0)
        early_on = 1;
    else
        posh_log(POSH_LOG_ERROR, "POSH_PREFETCH: \"%.100s\" is neither 0 nor 1: no early lookups", v);
}

/*
 * The name of fd's record, when the stream header named one and no early lookup for it was started yet (marked
 * started now). 1 found (name, and kind in *kind), 0 none.
 */
static int early_name(int fd, enum record_kind *kind, char name[POSH_MAX_DOMAIN_LEN + 2])
{
    struct stat st;
    sigset_t saved;
    int found = 0;

    if (fstat(fd, &st) != 0)
        return 0;
    table_lock(&saved);
    for (int k = 0; k < RECORD_KINDS && !found; k++) {
        stream_record *r = record_of((enum record_kind)k, fd, &st);
        if (r != NULL && r->state == STATE_HEADER && r->name[0] != '\0' && !r->early) {
            r->early = 1;
            memcpy(name, r->name, POSH_MAX_DOMAIN_LEN + 2);
            *kind = (enum record_kind)k;
            found = 1;
        }
    }
    table_unlock(&saved);
    return found;
}

/*
 * Start the lookup the coming verification will need, so that the handshake waits only for what is left of
 * it: posh_prefetch() on the default client, non-blocking, bounded by POSH_ASYNC_LOOKUPS (past it: not started,
 * the verification looks up itself) and POSH_ASYNC_TRANSFERS, single flight with the verification's own
 * lookup, a cached failure never fetched again before the negative TTL. Not in the hooks of write() or recv()
 * themselves, which a signal handler may call: SSL_set_fd() is an OpenSSL call, never async-signal-safe, the
 * first the program makes with the socket after the header (LuaSec, so Prosody, makes it when STARTTLS
 * proceeds, before any handshake record). The service: xmpp-server for a socket the program accepted (only
 * those get a record), the connection's own (shim.c) for one it dialled, if it is XMPP.
 */
static void early_lookup(SSL *ssl, int fd)
{
    char name[POSH_MAX_DOMAIN_LEN + 2], service[2 * POSH_MAX_SERVICE_LEN + 4];
    enum record_kind kind;
    posh_client *client;
    posh_err err;

    pthread_once(&early_once, early_read_env);
    if (!early_on || posh_verify_in_lookup() || !early_name(fd, &kind, name))
        return;
    if (kind == RECORD_IN)
        snprintf(service, sizeof(service), "_xmpp-server._tcp");
    else if (!shim_choose_service(ssl, service, sizeof(service)) ||
             (strcmp(service, "_xmpp-server._tcp") != 0 && strcmp(service, "_xmpp-client._tcp") != 0))
        return;
    ERR_set_mark();
    if ((client = posh_default_client()) != NULL && (err = posh_prefetch(client, name, service)) != POSH_OK)
        posh_log(POSH_LOG_DEBUG, "%s %s: early lookup not started: %s", name, service, posh_strerror(err));
    else if (client != NULL)
        posh_log(POSH_LOG_DEBUG, "%s %s: early lookup started (stream header %s)", name, service,
                 kind == RECORD_IN ? "received" : "sent");
    ERR_pop_to_mark();
}

SHIM_EXPORT int SSL_set_fd(SSL *ssl, int fd)
{
    set_fd_fn f = atomic_load_explicit(&real_set_fd, memory_order_acquire);
    int ret;
    if (__builtin_expect(f == NULL, 0)) {
        shim_ready();
        if ((f = atomic_load(&real_set_fd)) == NULL)
            return 0;
    }
    ret = f(ssl, fd);
    if (ret == 1 && fd >= 0 && !set_fd_foreign &&
        (!no_records(RECORD_IN) || !no_records(RECORD_OUT)))
        early_lookup(ssl, fd);
    return ret;
}
