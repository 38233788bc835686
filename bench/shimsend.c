/*
 * shimsend.c - what the shim's stream-header record costs a program that sends no stream header. The shim
 * interposes write(), send() and sendto(); a call whose data does not start with "<s" or "<?" costs it a byte or
 * two of tests. A
 * child (this program with --send-loop) times a send-heavy loop; the parent runs it alternately without and
 * with LD_PRELOAD=libposh-preload.so and compares the medians of the runs:
 *   write   64-byte writes to /dev/null (the cheapest system call: any overhead shows most here);
 *   send    64-byte datagrams on a connected loopback UDP socket nobody reads (dropped by the kernel);
 *   xml     255-byte writes starting with '<' (an XML stanza, not a stream header): a two-byte test.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define KINDS 3
static const char *const kind_names[KINDS] = {"write", "send", "xml"};

/*
 * A loopback TCP connection of the program's own, left open: its dialled end (returned) and its accepted end
 * (*accepted). Under the shim the dialled end holds an outgoing stream record (--send-loop N connected) and,
 * with POSH_SERVICE=xmpp-server, the accepted end an incoming one (--recv-loop N accepted), so that the hooks
 * also look at what each call moved (for callgrind). -1 on failure.
 */
int bench_tcp_pair(int *accepted)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sin, &len) != 0 || connect(c, (struct sockaddr *)&sin, len) != 0 ||
        (*accepted = accept(l, NULL, NULL)) < 0)
        return -1;
    return c;
}

/* The connected UDP pair's sending end; its receiver is never read, so the kernel drops what does not fit. */
static int udp_sender(int *receiver)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (r < 0 || s < 0 || bind(r, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(r, (struct sockaddr *)&sin, &len) != 0 || connect(s, (struct sockaddr *)&sin, len) != 0)
        return -1;
    *receiver = r;
    return s;
}

int bench_send_loop_main(long n, bool connected)
{
    static const char plain[64] = "posh benchmark: bytes that are neither XML nor a TLS record.....";
    char xml[256];
    double ns[KINDS];
    int devnull = open("/dev/null", O_WRONLY), receiver = -1, udp = udp_sender(&receiver), peer = -1;
    int64_t t0;

    /* 74 + 165 + 17 = 256 bytes would not fit with the NUL: 255 bytes of XML. */
    snprintf(xml, sizeof(xml), "<message xmlns='jabber:client' to='someone@example.org' type='chat'><body>%164s"
             "</body></message>", "hello");
    if (devnull < 0 || udp < 0 || n <= 0 || (connected && bench_tcp_pair(&peer) < 0))
        return 1;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        if (write(devnull, plain, sizeof(plain)) != (ssize_t)sizeof(plain))
            return 1;
    ns[0] = (double)(bench_now_ns() - t0) / (double)n;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        (void)send(udp, plain, sizeof(plain), 0); /* a full receive buffer may refuse: still a send() */
    ns[1] = (double)(bench_now_ns() - t0) / (double)n;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        if (write(devnull, xml, strlen(xml)) != (ssize_t)strlen(xml))
            return 1;
    ns[2] = (double)(bench_now_ns() - t0) / (double)n;
    printf("%.3f %.3f %.3f\n", ns[0], ns[1], ns[2]);
    return 0;
}

/* One child run (this program with loop_flag n): ns per call of each of the 3 kinds. */
static void run_child(const char *loop_flag, const char *shim, long n, double out[3])
{
    char count[32], buf[256];
    snprintf(count, sizeof(count), "%ld", n);
    const char *args[] = {loop_flag, count, NULL};
    if (bench_run_self(args, shim, buf, sizeof(buf)) < 0 || sscanf(buf, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
        bench_fail("%s: the loop %s (%s) failed: \"%s\"", loop_flag, count, shim != NULL ? "with the shim" : "plain",
                   buf);
}

void bench_shim_loops(const char *section, const char *loop_flag, const char *const kinds[3], bool smoke)
{
#ifdef POSH_SHIM_PATH
    const long n = smoke ? 20000 : 1000000;
    const int rounds = smoke ? 2 : 7;
    double *runs[2][3];
    char name[96];

    for (int w = 0; w < 2; w++)
        for (int k = 0; k < 3; k++)
            runs[w][k] = bench_xmalloc(sizeof(double) * (size_t)rounds);
    /* Alternate, so that a change of machine load hits both sides alike. */
    for (int r = 0; r < rounds; r++) {
        for (int w = 0; w < 2; w++) {
            double v[3];
            run_child(loop_flag, w == 1 ? POSH_SHIM_PATH : NULL, n, v);
            for (int k = 0; k < 3; k++)
                runs[w][k][r] = v[k];
        }
    }
    for (int k = 0; k < 3; k++) {
        double plain = bench_median(runs[0][k], (size_t)rounds), shim = bench_median(runs[1][k], (size_t)rounds);
        snprintf(name, sizeof(name), "%s, no shim (ns/call)", kinds[k]);
        bench_figure(section, name, plain, "ns", BENCH_INFO, BENCH_NONE, 0);
        snprintf(name, sizeof(name), "%s, with the shim (ns/call)", kinds[k]);
        bench_figure(section, name, shim, "ns", BENCH_INFO, BENCH_NONE, 0);
        snprintf(name, sizeof(name), "%s: with / without the shim", kinds[k]);
        /* Nothing measurable: while no record is held, a hook is a load, a test or two and a tail call. */
        bench_figure(section, name, shim / plain, "ratio", BENCH_MEASURED, BENCH_LE, 1.03);
        free(runs[0][k]);
        free(runs[1][k]);
    }
#else
    (void)loop_flag;
    (void)kinds;
    (void)smoke;
    bench_note("%s: the shim is not built (POSH_SHIM=OFF): section skipped", section);
#endif
}

void bench_shim_send(bool smoke)
{
    bench_shim_loops("shim send", "--send-loop", kind_names, smoke);
}
