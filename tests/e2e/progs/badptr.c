/* badptr CALL WHERE PORT: calls CALL on a loopback UDP socket with one pointer argument bad,
 * and prints {"rc": ..., "errno": ...}. The kernel answers EFAULT; a guard that reads the
 * pointer itself crashes instead.
 *   CALL:  connect | sendto | sendto-buf | sendmsg-name | sendmsg-hdr | sendmsg-iov |
 *          sendmsg-control | sendmmsg | sendmmsg-name | syscall-connect | syscall-sendmsg |
 *          sendto-remapped (sendto with the bad address, then the page mapped there again with
 *          the address in it and sendto once more: also prints "again")
 *   WHERE: one (address 1) | page (4095) | kernel (0xffff800000000000) | wrap (-8) |
 *          protnone (a PROT_NONE page) | unmapped (a page just unmapped) */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void *bad(const char *where) {
    if (!strcmp(where, "one")) return (void *)1;
    if (!strcmp(where, "page")) return (void *)4095;
    if (!strcmp(where, "kernel")) return (void *)0xffff800000000000ULL;
    if (!strcmp(where, "wrap")) return (void *)(uintptr_t)-8;
    void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    if (!strcmp(where, "unmapped")) munmap(p, 4096);
    else if (strcmp(where, "protnone")) { fprintf(stderr, "bad WHERE\n"); exit(2); }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *call = argv[1];
    void *p = bad(argv[2]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3])),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char data[] = "x";
    struct iovec iov = {.iov_base = data, .iov_len = 1};
    struct msghdr mh = {.msg_name = &sin, .msg_namelen = sizeof sin, .msg_iov = &iov, .msg_iovlen = 1};
    struct mmsghdr mm = {0};
    long rc;
    errno = 0;
    if (!strcmp(call, "connect")) rc = connect(fd, p, sizeof sin);
    else if (!strcmp(call, "sendto")) rc = sendto(fd, data, 1, 0, p, sizeof sin);
    else if (!strcmp(call, "sendto-buf")) rc = sendto(fd, p, 16, 0, (struct sockaddr *)&sin, sizeof sin);
    else if (!strcmp(call, "sendmsg-name")) { mh.msg_name = p; rc = sendmsg(fd, &mh, 0); }
    else if (!strcmp(call, "sendmsg-hdr")) rc = sendmsg(fd, p, 0);
    else if (!strcmp(call, "sendmsg-iov")) { mh.msg_iov = p; rc = sendmsg(fd, &mh, 0); }
    else if (!strcmp(call, "sendmsg-control")) { mh.msg_control = p; mh.msg_controllen = 64; rc = sendmsg(fd, &mh, 0); }
    else if (!strcmp(call, "sendmmsg")) rc = sendmmsg(fd, p, 1, 0);
    else if (!strcmp(call, "sendmmsg-name")) { mm.msg_hdr = mh; mm.msg_hdr.msg_name = p; rc = sendmmsg(fd, &mm, 1, 0); }
    else if (!strcmp(call, "syscall-connect")) rc = syscall(SYS_connect, fd, p, sizeof sin);
    else if (!strcmp(call, "syscall-sendmsg")) rc = syscall(SYS_sendmsg, fd, p, 0);
    else if (!strcmp(call, "sendto-remapped")) {
        rc = sendto(fd, data, 1, 0, p, sizeof sin);
        int err = rc < 0 ? errno : 0;
        void *q = mmap(p, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (q != p) { perror("mmap"); return 2; }
        memcpy(q, &sin, sizeof sin);
        errno = 0;
        long again = sendto(fd, data, 1, 0, q, sizeof sin);
        printf("{\"rc\": %ld, \"errno\": %d, \"again\": %ld}\n", rc, err, again);
        return 0;
    }
    else { fprintf(stderr, "bad CALL\n"); return 2; }
    printf("{\"rc\": %ld, \"errno\": %d}\n", rc, rc < 0 ? errno : 0);
    return 0;
}
