/* A stand-in dynamic loader that ignores LD_PRELOAD: it prints one line and exits 0. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    static const char msg[] = "stand-in loader ran\n";
    sys3(1, 1, (long)msg, sizeof msg - 1);
    sys3(60, 0, 0, 0);
    for (;;) {}
}
