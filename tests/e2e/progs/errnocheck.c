/* errnocheck: errno after connect() calls the guard lets through must be the kernel's.
 *
 *   errnocheck LISTEN_PORT CLOSED_PORT
 *
 * 1. a non-blocking connect to 127.0.0.1:LISTEN_PORT (a listener): -1 with EINPROGRESS;
 * 2. a blocking connect to 127.0.0.1:CLOSED_PORT (nothing listens): -1 with ECONNREFUSED.
 * errno is set to a sentinel (12345) before each call. Prints one JSON line:
 *   {"nonblock_rc":R,"nonblock_errno":E,"refused_rc":R,"refused_errno":E}
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void attempt(int port, int nonblock, int *rc, int *err) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        perror("socket");
        exit(2);
    }
    errno = 12345;
    *rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    *err = errno;
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: errnocheck LISTEN_PORT CLOSED_PORT\n");
        return 2;
    }
    int nrc, nerr, rrc, rerr;
    attempt(atoi(argv[1]), 1, &nrc, &nerr);
    attempt(atoi(argv[2]), 0, &rrc, &rerr);
    printf("{\"nonblock_rc\":%d,\"nonblock_errno\":%d,\"refused_rc\":%d,\"refused_errno\":%d}\n", nrc,
           nerr, rrc, rerr);
    return 0;
}
