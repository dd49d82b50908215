/* Workload (b): COUNT UDP datagrams sent with sendto to 127.0.0.1, to a port bound by a
 * receiver socket of this program that never reads (the kernel drops what does not fit).
 * ENOBUFS/EAGAIN are counted and ignored; any other error fails the run. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv)
{
    long n = bench_count(argc, argv);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
    socklen_t len = sizeof sin;

    int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (rx < 0)
        DIE("socket");
    if (bind(rx, (struct sockaddr *)&sin, sizeof sin) < 0)
        DIE("bind 127.0.0.1");
    if (getsockname(rx, (struct sockaddr *)&sin, &len) < 0)
        DIE("getsockname");

    int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (tx < 0)
        DIE("socket");
    int big = 4 << 20;
    setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);

    char payload[64];
    memset(payload, 'x', sizeof payload);
    long soft_errors = 0;
    for (long i = 0; i < n; i++) {
        if (sendto(tx, payload, sizeof payload, 0, (struct sockaddr *)&sin, sizeof sin) < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                soft_errors++;
            else
                DIE("sendto 127.0.0.1");
        }
    }
    if (soft_errors > n / 2) {
        fprintf(stderr, "udp: %ld of %ld sends failed with ENOBUFS/EAGAIN\n", soft_errors, n);
        return 1;
    }
    close(tx);
    close(rx);
    return 0;
}
