/*
 * net.c - the plaintext side of `posh verify`: TCP connect and the STARTTLS dialogues of XMPP (RFC 6120),
 * SMTP (RFC 3207) and IMAP (RFC 9051). The socket is non-blocking and every wait is bounded by the caller's
 * deadline; what the peer sends before TLS is capped, so a silent, slow or chatty peer cannot hold us.
 */
#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PLAINTEXT 16384 /* bytes the peer may send in one STARTTLS step */
#define MAX_LINE 1024       /* SMTP allows 512 per reply line, IMAP greetings are short */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cli_wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - cli_now_ms();
        int n;
        if (left <= 0)
            return 0;
        n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

int cli_split_hostport(const char *in, char *host, size_t hostlen, char *port, size_t portlen, char *err,
                       size_t errlen)
{
    const char *colon, *h = in;
    size_t hl;
    long p;

    if (in[0] == '[') {
        const char *close = strchr(in, ']');
        if (close == NULL || close[1] != ':') {
            set_err(err, errlen, "'%s': expected [IPV6]:PORT", in);
            return -1;
        }
        h = in + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(in, ':');
        if (colon == NULL || memchr(in, ':', (size_t)(colon - in)) != NULL) {
            set_err(err, errlen, "'%s': expected HOST:PORT (an IPv6 address goes in brackets: [::1]:PORT)", in);
            return -1;
        }
        hl = (size_t)(colon - in);
    }
    if (hl == 0 || hl >= hostlen) {
        set_err(err, errlen, "'%s': the host is empty or too long", in);
        return -1;
    }
    if (cli_parse_long(colon + 1, 1, 65535, &p) != 0 || strlen(colon + 1) >= portlen) {
        set_err(err, errlen, "'%s': the port must be a number from 1 to 65535", in);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%ld", p);
    return 0;
}

/* Try one address: a non-blocking connect finished by deadline. The socket, or -1 with errno set. */
static int connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    int soerr = 0, r;
    socklen_t len = sizeof(soerr);

    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto fail;
    r = cli_wait_fd(fd, POLLOUT, deadline);
    if (r == 0)
        errno = ETIMEDOUT;
    if (r <= 0)
        goto fail;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        goto fail;
    if (soerr == 0)
        return fd;
    errno = soerr;
fail:
    r = errno;
    close(fd);
    errno = r;
    return -1;
}

int cli_connect(const char *host, const char *port, int64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int fd = -1, gai, e = 0;

    gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        set_err(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN] = "?";
        if ((fd = connect_one(ai, deadline)) >= 0)
            break;
        e = errno;
        getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
        set_err(err, errlen, "cannot connect to %s%s%s%s port %s: %s", host, strcmp(addr, host) != 0 ? " (" : "",
                strcmp(addr, host) != 0 ? addr : "", strcmp(addr, host) != 0 ? ")" : "", port,
                e == ETIMEDOUT ? "timed out" : strerror(e));
        if (cli_now_ms() >= deadline)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- bounded plaintext I/O ---- */

typedef struct conv {
    int fd;
    int64_t deadline;
    char buf[MAX_PLAINTEXT + 1];
    size_t len;   /* bytes in buf (NUL-terminated) */
    char *err;
    size_t errlen;
} conv;

static int send_all(conv *c, const char *s)
{
    size_t len = strlen(s), off = 0;

    while (off < len) {
        ssize_t n = send(c->fd, s + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = cli_wait_fd(c->fd, POLLOUT, c->deadline);
            if (r > 0)
                continue;
            set_err(c->err, c->errlen, r == 0 ? "timed out sending to the server" : "poll: %s", strerror(errno));
            return -1;
        }
        set_err(c->err, c->errlen, "send: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Read more bytes into c->buf (at least one). -1 on timeout, EOF, error or when the cap is reached. */
static int recv_some(conv *c, const char *waiting_for)
{
    for (;;) {
        ssize_t n;
        int r;
        if (c->len >= MAX_PLAINTEXT) {
            set_err(c->err, c->errlen, "the server sent more than %d bytes while waiting for %s", MAX_PLAINTEXT,
                    waiting_for);
            return -1;
        }
        n = recv(c->fd, c->buf + c->len, MAX_PLAINTEXT - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            return 0;
        }
        if (n == 0) {
            set_err(c->err, c->errlen, "the server closed the connection while we waited for %s", waiting_for);
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            set_err(c->err, c->errlen, "recv: %s", strerror(errno));
            return -1;
        }
        r = cli_wait_fd(c->fd, POLLIN, c->deadline);
        if (r <= 0) {
            set_err(c->err, c->errlen, r == 0 ? "timed out waiting for %s" : "poll failed waiting for %s",
                    waiting_for);
            return -1;
        }
    }
}

/*
 * Nothing may follow the server's go-ahead: bytes injected there would be taken as TLS. Nor may a reply run
 * ahead of our command: a man in the middle appending "220" or "<proceed/>" to an earlier reply would otherwise
 * have it taken for the answer to a command not yet sent.
 */
static int expect_nothing_more(conv *c, size_t consumed)
{
    if (c->len > consumed) {
        set_err(c->err, c->errlen,
                "the server sent %zu unexpected bytes after its STARTTLS go-ahead (refusing: they could be "
                "injected plaintext)",
                c->len - consumed);
        return -1;
    }
    return 0;
}

/*
 * Take in whatever the server has already sent without waiting: a reply that ran ahead of our command may sit
 * in the socket, not yet read, when we look. 0, or -1 on a receive error or overflow.
 */
static int recv_pending(conv *c, const char *waiting_for)
{
    for (;;) {
        ssize_t n;
        if (c->len >= MAX_PLAINTEXT) {
            set_err(c->err, c->errlen, "the server sent more than %d bytes while waiting for %s", MAX_PLAINTEXT,
                    waiting_for);
            return -1;
        }
        n = recv(c->fd, c->buf + c->len, MAX_PLAINTEXT - c->len, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK)
            return 0; /* an end of stream shows up at the next wait */
        set_err(c->err, c->errlen, "recv: %s", strerror(errno));
        return -1;
    }
}

static int send_when_quiet(conv *c, const char *cmd, const char *what)
{
    if (recv_pending(c, what) != 0)
        return -1;
    if (c->len > 0) {
        set_err(c->err, c->errlen,
                "the server sent %zu bytes ahead of our %s (refusing: pipelined replies could be injected)",
                c->len, what);
        return -1;
    }
    return send_all(c, cmd);
}

/* One CRLF-terminated line into line (without CRLF), consumed from c->buf. */
static int read_line(conv *c, char *line, size_t linelen, const char *waiting_for)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - c->buf) + 1, l = n - 1;
            if (l > 0 && c->buf[l - 1] == '\r')
                l--;
            if (l >= linelen) {
                set_err(c->err, c->errlen, "a line longer than %zu bytes while waiting for %s", linelen - 1,
                        waiting_for);
                return -1;
            }
            memcpy(line, c->buf, l);
            line[l] = '\0';
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            c->buf[c->len] = '\0';
            return 0;
        }
        if (c->len >= MAX_LINE) {
            set_err(c->err, c->errlen, "a line longer than %d bytes while waiting for %s", MAX_LINE, waiting_for);
            return -1;
        }
        if (recv_some(c, waiting_for) != 0)
            return -1;
    }
}

/* Printable excerpt of what the server said, for messages. */
static const char *excerpt(const char *s, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; s[i] != '\0' && j + 1 < outlen && i < 200; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : ' ';
    out[j] = '\0';
    return out;
}

/* ---- SMTP (RFC 5321, RFC 3207) ---- */

/*
 * One reply: lines "CODE-text" then "CODE text". Returns the code (or -1), and sets *starttls when a line's
 * text is the STARTTLS keyword (EHLO replies).
 */
static int smtp_reply(conv *c, const char *waiting_for, int *starttls)
{
    char line[MAX_LINE + 1], ex[256];
    int code = -1;

    for (int lines = 0; lines < 100; lines++) {
        if (read_line(c, line, sizeof(line), waiting_for) != 0)
            return -1;
        if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (line[3] != '\0' && line[3] != ' ' && line[3] != '-')) {
            set_err(c->err, c->errlen, "not an SMTP reply line while waiting for %s: '%s'", waiting_for,
                    excerpt(line, ex, sizeof(ex)));
            return -1;
        }
        if (code != -1 && (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0') != code) {
            set_err(c->err, c->errlen, "inconsistent codes in a multi-line SMTP reply: '%s'",
                    excerpt(line, ex, sizeof(ex)));
            return -1;
        }
        code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (starttls != NULL && line[3] != '\0') {
            const char *kw = line + 4;
            size_t kl = strcspn(kw, " ");
            if (kl == 8 && strncasecmp(kw, "STARTTLS", 8) == 0)
                *starttls = 1;
        }
        if (line[3] != '-')
            return code;
    }
    set_err(c->err, c->errlen, "an SMTP reply of more than 100 lines while waiting for %s", waiting_for);
    return -1;
}

/* EHLO takes our own address as a literal: we have no name to claim. */
static void ehlo_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[INET6_ADDRSTRLEN];

    snprintf(out, outlen, "[127.0.0.1]");
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST) != 0)
        return;
    snprintf(out, outlen, ss.ss_family == AF_INET6 ? "[IPv6:%s]" : "[%s]", addr);
}

static int starttls_smtp(conv *c)
{
    char cmd[128], name[INET6_ADDRSTRLEN + 8];
    int code, offered = 0;

    if ((code = smtp_reply(c, "the SMTP greeting", NULL)) < 0)
        return -1;
    if (code != 220) {
        set_err(c->err, c->errlen, "the SMTP greeting is %d, not 220", code);
        return -1;
    }
    ehlo_name(c->fd, name, sizeof(name));
    snprintf(cmd, sizeof(cmd), "EHLO %s\r\n", name);
    if (send_when_quiet(c, cmd, "EHLO") != 0 || (code = smtp_reply(c, "the EHLO reply", &offered)) < 0)
        return -1;
    if (code != 250) {
        set_err(c->err, c->errlen, "EHLO was answered with %d", code);
        return -1;
    }
    if (!offered) {
        set_err(c->err, c->errlen, "the SMTP server does not offer STARTTLS");
        return -1;
    }
    if (send_when_quiet(c, "STARTTLS\r\n", "STARTTLS") != 0 ||
        (code = smtp_reply(c, "the STARTTLS reply", NULL)) < 0)
        return -1;
    if (code != 220) {
        set_err(c->err, c->errlen, "STARTTLS was answered with %d, not 220", code);
        return -1;
    }
    return expect_nothing_more(c, 0);
}

/* ---- IMAP (RFC 9051 section 6.2.1) ---- */

static int starttls_imap(conv *c)
{
    char line[MAX_LINE + 1], ex[256];

    if (read_line(c, line, sizeof(line), "the IMAP greeting") != 0)
        return -1;
    if (strncasecmp(line, "* OK", 4) != 0 || (line[4] != '\0' && line[4] != ' ')) {
        set_err(c->err, c->errlen, "the IMAP greeting is not '* OK': '%s'", excerpt(line, ex, sizeof(ex)));
        return -1;
    }
    if (send_when_quiet(c, "a1 STARTTLS\r\n", "STARTTLS") != 0)
        return -1;
    for (int lines = 0; lines < 100; lines++) {
        if (read_line(c, line, sizeof(line), "the STARTTLS reply") != 0)
            return -1;
        if (strncmp(line, "* ", 2) == 0)
            continue; /* untagged data (CAPABILITY, ...) may come first */
        if (strncasecmp(line, "a1 OK", 5) == 0 && (line[5] == '\0' || line[5] == ' '))
            return expect_nothing_more(c, 0);
        set_err(c->err, c->errlen, "STARTTLS refused: '%s'", excerpt(line, ex, sizeof(ex)));
        return -1;
    }
    set_err(c->err, c->errlen, "more than 100 untagged lines before the STARTTLS reply");
    return -1;
}

/* ---- XMPP (RFC 6120 section 5.4) ---- */

/* Read until one of the needles appears in c->buf; the index of the first found, or -1. */
static int read_until(conv *c, const char *const *needles, size_t n, const char *waiting_for)
{
    for (;;) {
        for (size_t i = 0; i < n; i++)
            if (strstr(c->buf, needles[i]) != NULL)
                return (int)i;
        if (recv_some(c, waiting_for) != 0)
            return -1;
    }
}

static int starttls_xmpp(conv *c, const char *domain, const char *service)
{
    static const char *const features[] = {"urn:ietf:params:xml:ns:xmpp-tls", "</stream:features>",
                                           "<stream:features/>", "<stream:error", "</stream:stream>"};
    static const char *const answers[] = {"<proceed", "<failure", "<stream:error", "</stream:stream>"};
    const char *ns = strcasecmp(service, "xmpp-client") == 0 || strcasecmp(service, "_xmpp-client._tcp") == 0
                         ? "jabber:client"
                         : "jabber:server";
    char header[512], ex[256];
    const char *end;
    int i;

    snprintf(header, sizeof(header),
             "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xml:lang='en' xmlns='%s' "
             "xmlns:stream='http://etherx.jabber.org/streams'>",
             domain, ns);
    if (send_all(c, header) != 0)
        return -1;
    i = read_until(c, features, sizeof(features) / sizeof(features[0]), "the stream features");
    if (i < 0)
        return -1;
    if (i != 0) {
        set_err(c->err, c->errlen, "the XMPP server does not offer STARTTLS: '%s'", excerpt(c->buf, ex, sizeof(ex)));
        return -1;
    }
    /* Read the features to their end; nothing may come after them before our <starttls/>. */
    {
        static const char *const fend[] = {"</stream:features>"};
        const char *fe;
        if (read_until(c, fend, 1, "the end of the stream features") < 0)
            return -1;
        if (recv_pending(c, "our <starttls/>") != 0)
            return -1;
        fe = strstr(c->buf, fend[0]) + strlen(fend[0]);
        if ((size_t)(fe - c->buf) < c->len) {
            set_err(c->err, c->errlen,
                    "the server sent %zu bytes after its stream features (refusing: pipelined replies could "
                    "be injected)",
                    c->len - (size_t)(fe - c->buf));
            return -1;
        }
        c->len = 0;
        c->buf[0] = '\0';
    }
    if (send_all(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>") != 0)
        return -1;
    i = read_until(c, answers, sizeof(answers) / sizeof(answers[0]), "<proceed/>");
    if (i < 0)
        return -1;
    if (i != 0) {
        set_err(c->err, c->errlen, "STARTTLS refused: '%s'", excerpt(c->buf, ex, sizeof(ex)));
        return -1;
    }
    /* <proceed xmlns='...'/> or <proceed ...></proceed>: read to its end, then nothing may follow. */
    for (;;) {
        const char *p = strstr(c->buf, "<proceed"), *gt = strchr(p, '>');
        if (gt != NULL && gt[-1] == '/') {
            end = gt + 1;
            break;
        }
        if (gt != NULL && strlen(gt + 1) >= strlen("</proceed>")) {
            if (strncmp(gt + 1, "</proceed>", strlen("</proceed>")) != 0) {
                set_err(c->err, c->errlen, "a malformed <proceed> element: '%s'", excerpt(p, ex, sizeof(ex)));
                return -1;
            }
            end = gt + 1 + strlen("</proceed>");
            break;
        }
        if (recv_some(c, "the end of <proceed/>") != 0)
            return -1;
    }
    return expect_nothing_more(c, (size_t)(end - c->buf));
}

int cli_starttls(int fd, cli_proto proto, const char *domain, const char *service, int64_t deadline, char *err,
                 size_t errlen)
{
    conv *c = calloc(1, sizeof(*c)); /* 16 KiB: not on the stack */
    int rc = -1;

    if (c == NULL) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    c->fd = fd;
    c->deadline = deadline;
    c->err = err;
    c->errlen = errlen;
    switch (proto) {
    case STARTTLS_NONE:
        rc = 0;
        break;
    case STARTTLS_XMPP:
        rc = starttls_xmpp(c, domain, service);
        break;
    case STARTTLS_SMTP:
        rc = starttls_smtp(c);
        break;
    case STARTTLS_IMAP:
        rc = starttls_imap(c);
        break;
    }
    free(c);
    return rc;
}
