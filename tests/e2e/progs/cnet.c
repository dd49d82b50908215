/* cnet: connect() and sendto() straight from C, for the egress-run end-to-end tests.
 *
 *   cnet connect ADDR PORT           TCP connect
 *   cnet sendto ADDR PORT PAYLOAD    one UDP datagram
 *   cnet burst ADDR PORT N           N UDP datagrams (payload "burst"), errors counted
 *
 * ADDR is numeric IPv4 or IPv6 (no lookup). Prints one line per action:
 *   "connect 203.0.113.10 5432: ok" or "connect ...: errno=13 (Permission denied)".
 * Exits 0 whatever happened (2 on usage errors).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static socklen_t make_addr(const char *addr, const char *port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)atoi(port));
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)atoi(port));
        return sizeof *v6;
    }
    fprintf(stderr, "cnet: not a numeric address: %s\n", addr);
    exit(2);
}

static void result(const char *what, const char *addr, const char *port, int rc, int err) {
    if (rc == 0)
        printf("%s %s %s: ok\n", what, addr, port);
    else
        printf("%s %s %s: errno=%d (%s)\n", what, addr, port, err, strerror(err));
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "connect") == 0) {
        struct sockaddr_storage ss;
        socklen_t len = make_addr(argv[2], argv[3], &ss);
        int fd = socket(ss.ss_family, SOCK_STREAM, 0);
        if (fd < 0) { perror("socket"); return 2; }
        int rc = connect(fd, (struct sockaddr *)&ss, len);
        result("connect", argv[2], argv[3], rc, errno);
        close(fd);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "sendto") == 0) {
        struct sockaddr_storage ss;
        socklen_t len = make_addr(argv[2], argv[3], &ss);
        int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
        if (fd < 0) { perror("socket"); return 2; }
        ssize_t n = sendto(fd, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&ss, len);
        result("sendto", argv[2], argv[3], n < 0 ? -1 : 0, errno);
        close(fd);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "burst") == 0) {
        struct sockaddr_storage ss;
        socklen_t len = make_addr(argv[2], argv[3], &ss);
        int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
        if (fd < 0) { perror("socket"); return 2; }
        long n = atol(argv[4]), failed = 0, lasterr = 0;
        for (long i = 0; i < n; i++)
            if (sendto(fd, "burst", 5, 0, (struct sockaddr *)&ss, len) < 0) { failed++; lasterr = errno; }
        printf("burst %s %s: %ld sent, %ld failed, errno=%ld\n", argv[2], argv[3], n - failed, failed, lasterr);
        fflush(stdout);
        close(fd);
        return 0;
    }
    fprintf(stderr, "usage: cnet connect ADDR PORT | sendto ADDR PORT PAYLOAD | burst ADDR PORT N\n");
    return 2;
}
