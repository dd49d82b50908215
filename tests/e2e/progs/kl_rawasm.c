/* A dynamic program that connects with an inline `syscall` instruction, out of every hook's
 * sight: `kl_rawasm IP PORT` prints "connect RESULT ERRNO". */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static long raw_connect(long fd, const void *addr, long len) {
    long r;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(42L), "D"(fd), "S"(addr), "d"(len), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    long r = raw_connect(s, &a, sizeof a);
    printf("connect %ld %ld\n", r < 0 ? -1L : r, r < 0 ? -r : 0L);
    return 0;
}
