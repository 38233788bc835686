/*
 * util.c - temp directories, files, ports, and the error message every support function leaves behind.
 */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <net/if.h>
#include <sched.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char ts_errbuf[4096];

const char *ts_error(void)
{
    return ts_errbuf;
}

void ts_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ts_errbuf, sizeof(ts_errbuf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "test support: %s\n", ts_errbuf);
}

char *ts_tmpdir(void)
{
    char *dir = strdup("/tmp/posh-test-XXXXXX");
    if (dir == NULL) {
        ts_set_error("ts_tmpdir: out of memory");
        return NULL;
    }
    if (mkdtemp(dir) == NULL) {
        ts_set_error("ts_tmpdir: mkdtemp: %s", strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (remove(path) != 0)
        fprintf(stderr, "test support: ts_rmtree: remove %s: %s\n", path, strerror(errno));
    return 0;
}

void ts_rmtree(const char *dir)
{
    /* A guard against a test passing a garbage path: only ever delete under /tmp/. */
    if (dir == NULL || strncmp(dir, "/tmp/", 5) != 0 || strstr(dir, "/..") != NULL || dir[5] == '\0') {
        ts_set_error("ts_rmtree: refusing to remove '%s'", dir ? dir : "(null)");
        return;
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int ts_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(sa);
    int fd, port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ts_set_error("ts_free_port: socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        ts_set_error("ts_free_port: bind: %s", strerror(errno));
    else
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int ts_write_file(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    const char *p = data;
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        ts_set_error("ts_write_file: path too long");
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        ts_set_error("ts_write_file: open %s: %s", tmp, strerror(errno));
        return -1;
    }
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            ts_set_error("ts_write_file: write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        ts_set_error("ts_write_file: %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

char *ts_read_file(const char *path, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        ts_set_error("ts_read_file: open %s: %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(cap);
    while (buf != NULL) {
        ssize_t r;
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ts_set_error("ts_read_file: read %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0) {
            close(fd);
            buf[n] = '\0';
            if (len != NULL)
                *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    free(buf);
    close(fd);
    ts_set_error("ts_read_file: %s: out of memory", path);
    return NULL;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int ts_wait_port(int port, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int err = 0;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;
        if (fd < 0) {
            ts_set_error("ts_wait_port: socket: %s", strerror(errno));
            return -1;
        }
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        err = errno;
        close(fd);
        if (rc == 0)
            return 0;
        if (now_ms() >= deadline)
            break;
        /* Loopback connect fails at once when nothing listens: retry every 5 ms until the deadline. */
        poll(NULL, 0, 5);
    }
    ts_set_error("ts_wait_port: 127.0.0.1:%d not accepting after %d ms: %s", port, timeout_ms, strerror(err));
    return -1;
}

int64_t ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pid_t ts_spawn(const char *const argv[], char *const env[], int in_fd, int out_fd, int die_with_parent)
{
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
            _exit(126);
        dup2(in_fd, 0);
        dup2(out_fd, 1);
        dup2(out_fd, 2);
        setpgid(0, 0);
        execve(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    if (pid < 0)
        ts_set_error("ts_spawn %s: fork: %s", argv[0], strerror(errno));
    return pid;
}

int ts_private_network(void)
{
    struct ifreq ifr = {0};
    struct if_nameindex *ifs, *i;
    int s, rc = -1;

    if (unshare(CLONE_NEWNET) != 0) {
        ts_set_error("unshare(CLONE_NEWNET): %s (the tests run as root: CI does)", strerror(errno));
        return -1;
    }
    if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
        ts_set_error("socket: %s", strerror(errno));
        return -1;
    }
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0 || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr)) != 0) {
        ts_set_error("bring lo up: %s", strerror(errno));
        goto done;
    }
    /* Loopback and nothing else: no route can take a packet off the machine. */
    if ((ifs = if_nameindex()) == NULL) {
        ts_set_error("if_nameindex: %s", strerror(errno));
        goto done;
    }
    rc = 0;
    for (i = ifs; i->if_index != 0; i++) {
        if (strcmp(i->if_name, "lo") != 0) {
            ts_set_error("interface %s in the new network namespace", i->if_name);
            rc = -1;
        }
    }
    if_freenameindex(ifs);
done:
    close(s);
    return rc;
}
