/*
 * util.c - small string helpers shared by every file of the library.
 */
#include "posh_internal.h"

#include <stdio.h>
#include <string.h>

/*
 * Messages are truncated rather than refused: a detail message that lost its tail is still better than none,
 * and callers never have to check a length.
 */
void posh_msg(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (buf == NULL || len == 0)
        return;
    va_start(ap, fmt);
    if (vsnprintf(buf, len, fmt, ap) < 0)
        buf[0] = '\0'; /* an encoding error leaves buf unspecified: make it a valid empty string */
    va_end(ap);
}

size_t posh_escape(char *dst, size_t dstlen, const char *src, posh_escape_mode mode)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(src != NULL ? src : "");
    size_t n = 0;

    if (dst == NULL || dstlen == 0)
        return 0;
    for (; *p != '\0'; p++) {
        char seq[4] = {(char)*p};
        size_t len = 1;
        if (*p < 0x20 || *p > 0x7e) {
            seq[0] = '\\';
            seq[1] = 'x';
            seq[2] = hex[*p >> 4];
            seq[3] = hex[*p & 0xf];
            len = 4;
        } else if (*p == '\\' && mode == POSH_ESCAPE_RAW) {
            seq[1] = '\\';
            len = 2;
        }
        if (len >= dstlen - n)
            break; /* the whole sequence and the NUL must fit: a cut escape would read as another byte */
        memcpy(dst + n, seq, len);
        n += len;
    }
    dst[n] = '\0';
    return n;
}
