/* Workload (b): COUNT UDP datagrams sent with sendto to 127.0.0.1, to a port bound by a
 * receiver socket of this program that never reads (the kernel drops what does not fit).
 * ENOBUFS/EAGAIN are counted and ignored; any other error fails the run.
 *
 * `udp COUNT [THREADS]`: THREADS sender threads (default 1), each with its own socket, share
 * the COUNT datagrams; all go to the same destination (one folded report line). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static struct sockaddr_in target;
static long soft_errors;

static void *sender(void *arg)
{
    long n = (long)arg;
    int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (tx < 0)
        DIE("socket");
    int big = 4 << 20;
    setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);

    char payload[64];
    memset(payload, 'x', sizeof payload);
    long soft = 0;
    for (long i = 0; i < n; i++) {
        if (sendto(tx, payload, sizeof payload, 0, (struct sockaddr *)&target, sizeof target) < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                soft++;
            else
                DIE("sendto 127.0.0.1");
        }
    }
    __atomic_add_fetch(&soft_errors, soft, __ATOMIC_RELAXED);
    close(tx);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads;
    long n = bench_count_threads(argc, argv, &threads);
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
    target = sin;

    if (threads == 1) {
        sender((void *)n);
    } else {
        pthread_t senders[64];
        for (long i = 0; i < threads; i++)
            if (pthread_create(&senders[i], NULL, sender, (void *)bench_share(n, threads, i)) != 0)
                DIE("pthread_create");
        for (long i = 0; i < threads; i++)
            pthread_join(senders[i], NULL);
    }
    if (soft_errors > n / 2) {
        fprintf(stderr, "udp: %ld of %ld sends failed with ENOBUFS/EAGAIN\n", soft_errors, n);
        return 1;
    }
    close(rx);
    return 0;
}
