/* A static program's network calls for the kernel layer's tests: `kl_net OP IP PORT` with OP
 * connect, sendto, sendmsg or sendmmsg (IPv4 or IPv6 by the address); prints
 * "OP RESULT ERRNO". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *op = argv[1];
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    int family;
    if (strchr(argv[2], ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = family = AF_INET6;
        a->sin6_port = htons(atoi(argv[3]));
        inet_pton(AF_INET6, argv[2], &a->sin6_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = family = AF_INET;
        a->sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &a->sin_addr);
        len = sizeof *a;
    }
    int stream = strcmp(op, "connect") == 0;
    int s = socket(family, stream ? SOCK_STREAM : SOCK_DGRAM, 0);
    long r;
    char payload[] = "kernel-layer";
    struct iovec iov = {payload, sizeof payload - 1};
    struct msghdr m = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
    if (stream) {
        r = connect(s, (struct sockaddr *)&ss, len);
    } else if (strcmp(op, "sendto") == 0) {
        r = sendto(s, payload, sizeof payload - 1, 0, (struct sockaddr *)&ss, len);
    } else if (strcmp(op, "sendmsg") == 0) {
        r = sendmsg(s, &m, 0);
    } else {
        struct mmsghdr mm[2] = {{.msg_hdr = m}, {.msg_hdr = m}};
        r = sendmmsg(s, mm, 2, 0);
        if (r > 0) printf("msg_len %u %u\n", mm[0].msg_len, mm[1].msg_len);
    }
    printf("%s %ld %d\n", op, r, r < 0 ? errno : 0);
    return 0;
}
