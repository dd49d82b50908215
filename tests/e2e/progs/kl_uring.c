/* io_uring_setup as a runtime probes for it: prints "io_uring_setup RESULT ERRNO". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    unsigned char params[120];
    memset(params, 0, sizeof params);
    long r = syscall(425, 4, params);
    printf("io_uring_setup %ld %d\n", r < 0 ? -1L : 0L, r < 0 ? errno : 0);
    return 0;
}
