/*
 * nginx.c - the real nginx as a child process on 127.0.0.1, SNI virtual hosts with their own certificates,
 * static files, redirects and statuses, and request counting from its (unbuffered) access log.
 */
#include "support.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef POSH_TEST_NGINX
#define POSH_TEST_NGINX "/usr/sbin/nginx"
#endif

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define SYNC_TIMEOUT_MS 5000
#define START_ATTEMPTS 5
/* The host of the requests ts_nginx_requests() makes to itself; never counted. */
#define SYNC_HOST "ts-sync.invalid"

typedef struct site {
    char *name, *cert, *key, *root;
    char *locations; /* config text of the exact-match locations */
    struct site *next;
} site;

struct ts_nginx {
    char *dir;
    site *sites; /* in the order added: the first is the default server */
    size_t nsites;
    pid_t pid;   /* 0: not running */
    int port, http_port;
    unsigned long syncs;
};

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static char *path_in(const ts_nginx *n, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", n->dir, name) < 0)
        return NULL;
    return p;
}

/* Safe inside a double-quoted nginx string that is also a script (no variables, no escapes, no spaces). */
static int config_safe(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f || strchr("\"'\\$;{}", *s) != NULL)
            return 0;
    return 1;
}

static int name_ok(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > 253)
        return 0;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && strchr(".-_*", *s) == NULL)
            return 0;
    return 1;
}

/* A URL path for a file or an exact location: absolute, plain (no %-escapes, no query), no dot segments. */
static int url_path_ok(const char *p)
{
    if (p == NULL || p[0] != '/' || !config_safe(p) || strpbrk(p, "%?#") != NULL || strstr(p, "//") != NULL)
        return 0;
    for (const char *s = p; (s = strchr(s, '/')) != NULL; s++)
        if (s[1] == '.' && (s[2] == '/' || s[2] == '\0' || (s[2] == '.' && (s[3] == '/' || s[3] == '\0'))))
            return 0;
    return 1;
}

static site *find_site(ts_nginx *n, const char *name)
{
    for (site *s = n->sites; s != NULL; s = s->next)
        if (name != NULL && strcasecmp(s->name, name) == 0)
            return s;
    ts_set_error("nginx: no site '%s'", name ? name : "(null)");
    return NULL;
}

ts_nginx *ts_nginx_new(const char *dir)
{
    ts_nginx *n = calloc(1, sizeof(*n));
    char *sites = NULL;

    if (n == NULL || dir == NULL || asprintf(&n->dir, "%s/nginx-XXXXXX", dir) < 0) {
        ts_set_error("ts_nginx_new: %s", dir == NULL ? "no directory" : "out of memory");
        free(n);
        return NULL;
    }
    if (mkdtemp(n->dir) == NULL || (sites = path_in(n, "sites")) == NULL || mkdir(sites, 0755) != 0) {
        ts_set_error("ts_nginx_new: directory under %s: %s", dir, strerror(errno));
        free(sites);
        free(n->dir);
        free(n);
        return NULL;
    }
    free(sites);
    n->port = n->http_port = -1;
    return n;
}

int ts_nginx_add_site(ts_nginx *n, const char *server_name, const char *cert_path, const char *key_path)
{
    site *s, **tail;

    if (n->pid != 0) {
        ts_set_error("ts_nginx_add_site: nginx already started");
        return -1;
    }
    if (!name_ok(server_name) || !config_safe(cert_path) || !config_safe(key_path)) {
        ts_set_error("ts_nginx_add_site: unusable name or path ('%s', '%s', '%s')", server_name ? server_name : "",
                     cert_path ? cert_path : "", key_path ? key_path : "");
        return -1;
    }
    for (s = n->sites; s != NULL; s = s->next)
        if (strcasecmp(s->name, server_name) == 0) {
            ts_set_error("ts_nginx_add_site: '%s' already added", server_name);
            return -1;
        }
    if ((s = calloc(1, sizeof(*s))) == NULL)
        goto oom;
    if ((s->name = strdup(server_name)) == NULL || (s->cert = strdup(cert_path)) == NULL ||
        (s->key = strdup(key_path)) == NULL || (s->locations = strdup("")) == NULL ||
        asprintf(&s->root, "%s/sites/%zu", n->dir, n->nsites) < 0) {
        s->root = NULL;
        goto oom;
    }
    if (mkdir(s->root, 0755) != 0) {
        ts_set_error("ts_nginx_add_site: mkdir %s: %s", s->root, strerror(errno));
        goto fail;
    }
    for (tail = &n->sites; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = s;
    n->nsites++;
    return 0;
oom:
    ts_set_error("ts_nginx_add_site: out of memory");
fail:
    if (s != NULL) {
        free(s->name);
        free(s->cert);
        free(s->key);
        free(s->locations);
        free(s->root);
        free(s);
    }
    return -1;
}

/* mkdir -p of the directories leading to file (below root, which exists). */
static int make_parents(const char *root, char *file)
{
    for (char *p = file + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(file, 0755) != 0 && errno != EEXIST) {
            ts_set_error("nginx: mkdir %s: %s", file, strerror(errno));
            *p = '/';
            return -1;
        }
        *p = '/';
    }
    return 0;
}

int ts_nginx_put_bytes(ts_nginx *n, const char *server_name, const char *path, const void *data, size_t len)
{
    site *s = find_site(n, server_name);
    char *file = NULL;
    int rc;

    if (s == NULL)
        return -1;
    if (!url_path_ok(path) || path[strlen(path) - 1] == '/') {
        ts_set_error("ts_nginx_put: unusable path '%s'", path ? path : "(null)");
        return -1;
    }
    if (asprintf(&file, "%s%s", s->root, path) < 0) {
        ts_set_error("ts_nginx_put: out of memory");
        return -1;
    }
    rc = make_parents(s->root, file) == 0 ? ts_write_file(file, data, len) : -1;
    free(file);
    return rc;
}

int ts_nginx_put(ts_nginx *n, const char *server_name, const char *path, const char *body)
{
    if (body == NULL) {
        ts_set_error("ts_nginx_put: no body");
        return -1;
    }
    return ts_nginx_put_bytes(n, server_name, path, body, strlen(body));
}

int ts_nginx_delete(ts_nginx *n, const char *server_name, const char *path)
{
    site *s = find_site(n, server_name);
    char *file = NULL;
    int rc = 0;

    if (s == NULL)
        return -1;
    if (!url_path_ok(path) || asprintf(&file, "%s%s", s->root, path) < 0) {
        ts_set_error("ts_nginx_delete: unusable path '%s'", path ? path : "(null)");
        return -1;
    }
    if (unlink(file) != 0) {
        ts_set_error("ts_nginx_delete: %s: %s", file, strerror(errno));
        rc = -1;
    }
    free(file);
    return rc;
}

static int add_location(ts_nginx *n, const char *server_name, const char *path, int code, const char *location)
{
    site *s = find_site(n, server_name);
    char *more = NULL;

    if (s == NULL)
        return -1;
    if (n->pid != 0) {
        ts_set_error("nginx: locations must be added before start");
        return -1;
    }
    if (!url_path_ok(path) || (location != NULL && !config_safe(location))) {
        ts_set_error("nginx: unusable path or location ('%s', '%s')", path ? path : "",
                     location ? location : "");
        return -1;
    }
    if (asprintf(&more, "%s        location = \"%s\" { return %d%s%s%s; }\n", s->locations, path, code,
                 location ? " \"" : "", location ? location : "", location ? "\"" : "") < 0) {
        ts_set_error("nginx: out of memory");
        return -1;
    }
    free(s->locations);
    s->locations = more;
    return 0;
}

int ts_nginx_redirect(ts_nginx *n, const char *server_name, const char *path, int code, const char *location)
{
    if (code != 301 && code != 302 && code != 303 && code != 307 && code != 308) {
        ts_set_error("ts_nginx_redirect: %d is not a redirect status", code);
        return -1;
    }
    if (location == NULL) {
        ts_set_error("ts_nginx_redirect: no location");
        return -1;
    }
    return add_location(n, server_name, path, code, location);
}

int ts_nginx_status(ts_nginx *n, const char *server_name, const char *path, int code)
{
    if (code < 100 || code > 599) {
        ts_set_error("ts_nginx_status: bad status %d", code);
        return -1;
    }
    return add_location(n, server_name, path, code, NULL);
}

static char *config_text(ts_nginx *n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    const char *d = n->dir;

    if (f == NULL)
        return NULL;
    /* Single process: one pid to signal and reap, and every request handled in order by one event loop,
     * which is what lets ts_nginx_requests() know the log is complete (see sync_log). */
    fprintf(f,
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid \"%s/nginx.pid\";\n"
            "error_log \"%s/error.log\" info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "    types { }\n    default_type application/json;\n    charset off;\n    server_tokens off;\n"
            "    absolute_redirect off;\n"
            "    log_format ts '$connection $scheme $status $host $request_uri';\n"
            "    access_log \"%s/access.log\" ts;\n"
            "    client_body_temp_path \"%s/tmp/body\";\n    proxy_temp_path \"%s/tmp/proxy\";\n"
            "    fastcgi_temp_path \"%s/tmp/fastcgi\";\n    uwsgi_temp_path \"%s/tmp/uwsgi\";\n"
            "    scgi_temp_path \"%s/tmp/scgi\";\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n",
            d, d, d, d, d, d, d, d);
    for (site *s = n->sites; s != NULL; s = s->next)
        fprintf(f,
                "    server {\n        listen 127.0.0.1:%d ssl;\n        listen 127.0.0.1:%d;\n"
                "        server_name %s;\n        ssl_certificate \"%s\";\n        ssl_certificate_key \"%s\";\n"
                "        root \"%s\";\n        location / { }\n%s    }\n",
                n->port, n->http_port, s->name, s->cert, s->key, s->root, s->locations);
    fprintf(f,
            "    server {\n        listen 127.0.0.1:%d;\n        server_name " SYNC_HOST ";\n"
            "        location / { return 204; }\n    }\n}\n",
            n->http_port);
    if (fclose(f) != 0)
        return NULL;
    return text;
}

/* ts_read_file, except that a file that does not exist (yet) is a quiet NULL. */
static char *read_if_any(const char *path)
{
    return access(path, F_OK) == 0 ? ts_read_file(path, NULL) : NULL;
}

/* Contents of the log files that explain a failed start, for the error message. */
static void start_error(ts_nginx *n, const char *why)
{
    char *err_path = path_in(n, "error.log"), *out_path = path_in(n, "stderr.log");
    char *err = err_path ? read_if_any(err_path) : NULL;
    char *out = out_path ? read_if_any(out_path) : NULL;
    ts_set_error("nginx (%s) in %s: %s\n--- error.log:\n%s--- stderr:\n%s", POSH_TEST_NGINX, n->dir, why,
                 err ? err : "", out ? out : "");
    free(err);
    free(out);
    free(err_path);
    free(out_path);
}

static int file_contains(const char *path, const char *needle)
{
    char *text = read_if_any(path);
    int found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* Send sig, then reap with a deadline; SIGKILL if it does not go. */
static void kill_and_reap(pid_t pid, int sig)
{
    long deadline = mono_ms() + STOP_TIMEOUT_MS;
    kill(pid, sig);
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        if (mono_ms() >= deadline) {
            fprintf(stderr, "test support: nginx %d ignored signal %d for %d ms: SIGKILL\n", (int)pid, sig,
                    STOP_TIMEOUT_MS);
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
            return;
        }
        poll(NULL, 0, 2);
    }
}

static pid_t spawn(ts_nginx *n, const char *conf, const char *errlog, const char *outlog)
{
    char prefix[4096];
    char *argv[] = {(char *)POSH_TEST_NGINX, "-p", prefix, "-c", (char *)conf, "-e", (char *)errlog, NULL};
    pid_t parent = getpid(), pid;
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(outlog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

    snprintf(prefix, sizeof(prefix), "%s/", n->dir);
    if (in < 0 || out < 0) {
        ts_set_error("nginx: open /dev/null or %s: %s", outlog, strerror(errno));
        pid = -1;
        goto done;
    }
    pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec: the test may have threads. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
            _exit(127);
        close_range(3, ~0U, 0); /* nothing of the test (Criterion's pipes, sockets) leaks into nginx */
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid < 0)
        ts_set_error("nginx: fork: %s", strerror(errno));
done:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return pid;
}

/*
 * One start attempt on fresh ports. 0: up; 1: a port was taken meanwhile (try again); -1: failed.
 * nginx writes its pid file after it has bound and is listening on every port, so "pid file holds the
 * child's pid" means ready; the connect() checks then confirm it from the outside.
 */
static int start_once(ts_nginx *n, const char *conf_path, const char *pid_path, const char *err_path,
                      const char *out_path)
{
    long deadline = mono_ms() + START_TIMEOUT_MS;
    char *conf, want[32];
    int rc;

    n->port = ts_free_port();
    n->http_port = ts_free_port();
    if (n->port < 0 || n->http_port < 0)
        return -1;
    if (n->port == n->http_port)
        return 1;
    if ((conf = config_text(n)) == NULL) {
        ts_set_error("nginx: out of memory");
        return -1;
    }
    rc = ts_write_file(conf_path, conf, strlen(conf));
    free(conf);
    if (rc != 0)
        return -1;
    unlink(pid_path);
    if (truncate(err_path, 0) != 0 && errno != ENOENT) {
        ts_set_error("nginx: truncate %s: %s", err_path, strerror(errno));
        return -1;
    }
    if ((n->pid = spawn(n, conf_path, err_path, out_path)) < 0) {
        n->pid = 0;
        return -1;
    }
    snprintf(want, sizeof(want), "%d\n", (int)n->pid);
    for (;;) {
        int status;
        char *pid_text;
        pid_t r = waitpid(n->pid, &status, WNOHANG);
        if (r == n->pid) {
            n->pid = 0;
            if (file_contains(err_path, "Address already in use"))
                return 1;
            start_error(n, WIFEXITED(status) ? "exited at start" : "killed at start");
            return -1;
        }
        if (file_contains(err_path, "Address already in use")) {
            kill_and_reap(n->pid, SIGKILL); /* it would retry bind() for 2.5 s before giving up */
            n->pid = 0;
            return 1;
        }
        pid_text = read_if_any(pid_path);
        if (pid_text != NULL && strcmp(pid_text, want) == 0) {
            free(pid_text);
            break;
        }
        free(pid_text);
        if (mono_ms() >= deadline) {
            start_error(n, "no pid file before the deadline");
            return -1;
        }
        poll(NULL, 0, 2);
    }
    rc = ts_wait_port(n->port, (int)(deadline - mono_ms()));
    if (rc == 0)
        rc = ts_wait_port(n->http_port, (int)(deadline - mono_ms()));
    if (rc != 0) {
        start_error(n, "not accepting connections");
        return -1;
    }
    return 0;
}

int ts_nginx_start(ts_nginx *n)
{
    char *conf = path_in(n, "nginx.conf"), *pidf = path_in(n, "nginx.pid"), *err = path_in(n, "error.log"),
         *out = path_in(n, "stderr.log"), *tmp = path_in(n, "tmp");
    int rc = -1;

    if (conf == NULL || pidf == NULL || err == NULL || out == NULL || tmp == NULL) {
        ts_set_error("nginx: out of memory");
        goto done;
    }
    if (n->pid != 0) {
        ts_set_error("ts_nginx_start: already started");
        goto done;
    }
    if (n->sites == NULL) {
        ts_set_error("ts_nginx_start: no site");
        goto done;
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        ts_set_error("nginx: mkdir %s: %s", tmp, strerror(errno));
        goto done;
    }
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        rc = start_once(n, conf, pidf, err, out);
        if (rc != 1)
            break;
    }
    if (rc == 1)
        start_error(n, "ports kept being taken");
    if (rc != 0) {
        if (n->pid != 0)
            kill_and_reap(n->pid, SIGKILL);
        n->pid = 0;
        n->port = n->http_port = -1;
        rc = -1;
    }
done:
    free(conf);
    free(pidf);
    free(err);
    free(out);
    free(tmp);
    return rc;
}

int ts_nginx_port(ts_nginx *n)
{
    return n->pid != 0 ? n->port : -1;
}

int ts_nginx_http_port(ts_nginx *n)
{
    return n->pid != 0 ? n->http_port : -1;
}

const char *ts_nginx_dir(ts_nginx *n)
{
    return n->dir;
}

/*
 * Make sure every request nginx answered before this call is in the access log. nginx writes a request's
 * log line right after the last byte of its response, in the same pass of its single event loop; a client
 * may see the response first. A request of our own, made now, is handled after all of those, so once its
 * line is in the log theirs are too.
 */
static int sync_log(ts_nginx *n, const char *log_path)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    long deadline = mono_ms() + SYNC_TIMEOUT_MS;
    char req[128], needle[64], buf[512];
    int fd, len;

    if (n->pid == 0)
        return 0;
    n->syncs++;
    len = snprintf(req, sizeof(req), "GET /__ts_sync/%lu HTTP/1.0\r\nHost: " SYNC_HOST "\r\n\r\n", n->syncs);
    snprintf(needle, sizeof(needle), " " SYNC_HOST " /__ts_sync/%lu\n", n->syncs);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)n->http_port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
        ts_set_error("nginx: log sync request: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;
        int left = (int)(deadline - mono_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            ts_set_error("nginx: log sync: no response in time");
            close(fd);
            return -1;
        }
        r = recv(fd, buf, sizeof(buf), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
    }
    close(fd);
    while (!file_contains(log_path, needle)) {
        if (mono_ms() >= deadline) {
            ts_set_error("nginx: log sync: '%s' never reached %s", needle, log_path);
            return -1;
        }
        poll(NULL, 0, 1);
    }
    return 0;
}

/* The access log after a sync, or NULL (error). An absent log (nothing served yet) reads as empty. */
static char *read_log(ts_nginx *n)
{
    char *path = path_in(n, "access.log"), *text = NULL;
    struct stat st;

    if (path == NULL) {
        ts_set_error("nginx: out of memory");
        return NULL;
    }
    if (sync_log(n, path) == 0) {
        if (stat(path, &st) != 0 && errno == ENOENT)
            text = strdup("");
        else
            text = ts_read_file(path, NULL);
    }
    free(path);
    return text;
}

typedef struct log_line {
    long conn;
    char scheme[8];
    char host[256];
    const char *uri; /* in the log text, up to the newline (replaced by NUL) */
} log_line;

/* Parse the line at *cursor and advance; 0 at the end. Lines that do not parse are skipped. */
static int next_line(char **cursor, log_line *l)
{
    while (**cursor != '\0') {
        char *line = *cursor, *nl = strchr(line, '\n');
        int status, off = 0;
        if (nl != NULL) {
            *nl = '\0';
            *cursor = nl + 1;
        } else {
            *cursor = line + strlen(line);
        }
        if (sscanf(line, "%ld %7s %d %255s %n", &l->conn, l->scheme, &status, l->host, &off) == 4 && off > 0) {
            l->uri = line + off;
            return 1;
        }
    }
    return 0;
}

long ts_nginx_requests(ts_nginx *n, const char *server_name, const char *path)
{
    char *text = read_log(n), *cursor = text;
    long count = 0;
    log_line l;

    if (text == NULL)
        return -1;
    while (next_line(&cursor, &l))
        if (strcmp(l.host, SYNC_HOST) != 0 && (server_name == NULL || strcasecmp(l.host, server_name) == 0) &&
            (path == NULL || strcmp(l.uri, path) == 0))
            count++;
    free(text);
    return count;
}

long ts_nginx_connections(ts_nginx *n, const char *server_name)
{
    char *text = read_log(n), *cursor = text;
    long *seen = NULL, count = 0;
    size_t cap = 0;
    log_line l;

    if (text == NULL)
        return -1;
    while (next_line(&cursor, &l)) {
        long i;
        if (strcmp(l.scheme, "https") != 0 || (server_name != NULL && strcasecmp(l.host, server_name) != 0))
            continue;
        for (i = 0; i < count && seen[i] != l.conn; i++)
            ;
        if (i < count)
            continue;
        if ((size_t)count == cap) {
            long *more = realloc(seen, (cap = cap ? cap * 2 : 16) * sizeof(*seen));
            if (more == NULL) {
                ts_set_error("nginx: out of memory");
                free(seen);
                free(text);
                return -1;
            }
            seen = more;
        }
        seen[count++] = l.conn;
    }
    free(seen);
    free(text);
    return count;
}

void ts_nginx_free(ts_nginx *n)
{
    if (n == NULL)
        return;
    if (n->pid != 0)
        kill_and_reap(n->pid, SIGTERM);
    while (n->sites != NULL) {
        site *s = n->sites;
        n->sites = s->next;
        free(s->name);
        free(s->cert);
        free(s->key);
        free(s->root);
        free(s->locations);
        free(s);
    }
    free(n->dir);
    free(n);
}
