/*
 * shimrecv.c - what the shim's receiving side costs a program that receives no stream header. The shim
 * interposes read(), recv() and recvfrom() (for the `from` of the header a peer sends on an XMPP s2s socket the
 * program accepted); while no such socket is open a call is a load, a test and a tail call. A child (this
 * program with --recv-loop) times a receive-heavy loop; the parent runs it alternately without and with
 * LD_PRELOAD=libposh-preload.so and compares the medians of the runs:
 *   read    64-byte reads from /dev/zero (the cheapest reads: any overhead shows most here);
 *   recv    recv() on an empty loopback UDP socket, MSG_DONTWAIT (EAGAIN: the call itself);
 *   xml     255-byte reads of an XML stanza from a memory file (rewound with lseek each time).
 * With --recv-loop N accepted the child first accepts an XMPP s2s socket (POSH_SERVICE=xmpp-server) and keeps
 * it open, so that the hooks also look at every read's first bytes (for callgrind).
 */
#include "bench.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define KINDS 3
static const char *const kind_names[KINDS] = {"read", "recv", "xml"};


int bench_recv_loop_main(long n, bool accepted)
{
    char buf[256], xml[256];
    double ns[KINDS];
    struct sockaddr_in sin = {.sin_family = AF_INET};
    int zero = open("/dev/zero", O_RDONLY), udp = socket(AF_INET, SOCK_DGRAM, 0), mem = memfd_create("xml", 0);
    int peer = -1;
    size_t xml_len;
    int64_t t0;

    snprintf(xml, sizeof(xml), "<message xmlns='jabber:client' to='someone@example.org' type='chat'><body>%164s"
             "</body></message>", "hello");
    xml_len = strlen(xml);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (zero < 0 || udp < 0 || mem < 0 || n <= 0 || bind(udp, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        write(mem, xml, xml_len) != (ssize_t)xml_len)
        return 1;
    if (accepted && (setenv("POSH_SERVICE", "xmpp-server", 1) != 0 || bench_tcp_pair(&peer) < 0))
        return 1;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        if (read(zero, buf, 64) != 64)
            return 1;
    ns[0] = (double)(bench_now_ns() - t0) / (double)n;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        (void)recv(udp, buf, sizeof(buf), MSG_DONTWAIT); /* EAGAIN: nothing was sent */
    ns[1] = (double)(bench_now_ns() - t0) / (double)n;
    t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        if (lseek(mem, 0, SEEK_SET) != 0 || read(mem, buf, xml_len) != (ssize_t)xml_len)
            return 1;
    ns[2] = (double)(bench_now_ns() - t0) / (double)n;
    printf("%.3f %.3f %.3f\n", ns[0], ns[1], ns[2]);
    return 0;
}

void bench_shim_recv(bool smoke)
{
    bench_shim_loops("shim recv", "--recv-loop", kind_names, smoke);
}
