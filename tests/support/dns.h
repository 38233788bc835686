/*
 * dns.h - a tiny authoritative DNS responder over UDP for tests that run programs with their own resolver
 * (Prosody's net.dns reads /etc/resolv.conf and ignores /etc/hosts). It knows only the records it is given
 * (A, AAAA, SRV, class IN); a question for a name it has records for gets those of the asked type (possibly
 * none: NOERROR with an empty answer), any other name NXDOMAIN. It never forwards anything anywhere.
 *
 * Conventions as in support.h (0 / -1, NULL on failure, ts_error()). Records are added before start.
 */
#ifndef POSH_TEST_DNS_H
#define POSH_TEST_DNS_H

#define TS_DNS_A 1
#define TS_DNS_AAAA 28
#define TS_DNS_SRV 33

typedef struct ts_dns ts_dns;

ts_dns *ts_dns_new(void);
/* name: a DNS name (a trailing dot allowed, compared without regard to case). addr: dotted IPv4 / IPv6 text. */
int ts_dns_add_a(ts_dns *d, const char *name, const char *addr);
int ts_dns_add_aaaa(ts_dns *d, const char *name, const char *addr);
int ts_dns_add_srv(ts_dns *d, const char *name, int priority, int weight, int port, const char *target);
/* Mark a name as existing with no records (its questions get NOERROR, empty), rather than NXDOMAIN. */
int ts_dns_add_empty(ts_dns *d, const char *name);
/* Answer on UDP addr:port (port 0: any free one) from a thread of its own. */
int ts_dns_start(ts_dns *d, const char *addr, int port);
int ts_dns_port(ts_dns *d);
/* Questions answered so far for name (NULL: any) and type (0: any). */
long ts_dns_queries(ts_dns *d, const char *name, int type);
/* Every question so far, one "name TYPE rcode" per line (for failure messages). Caller frees. */
char *ts_dns_log(ts_dns *d);
/* Stop the thread, close the socket, free. Accepts NULL. */
void ts_dns_free(ts_dns *d);

#endif
