/*
 * util.c - small string helpers shared by every file of the library.
 */
#include "posh_internal.h"

#include <stdio.h>

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
