/* static_probe.c - a statically linked program that does nothing: what `posh doctor` must call static. */
int main(void) { return 0; }
