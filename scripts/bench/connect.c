/* Workload (a): COUNT TCP connects to a listener on 127.0.0.1 (a thread of this program,
 * accepting in a loop). Each client socket gets SO_LINGER {1,0} before close, so it is reset
 * instead of lingering in TIME_WAIT and the ephemeral ports never run out.
 *
 * `connect COUNT [THREADS]`: THREADS client threads (default 1) share the COUNT connects, to
 * see whether the guard's per-process state makes threads contend. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static int listener;
static struct sockaddr_in target;

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c >= 0)
            close(c);
        else if (errno != EINTR && errno != ECONNABORTED)
            return NULL; /* the process is exiting */
    }
}

static void *client(void *arg)
{
    long n = (long)arg;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            DIE("socket");
        if (connect(s, (struct sockaddr *)&target, sizeof target) < 0)
            DIE("connect 127.0.0.1");
        if (setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
            DIE("setsockopt SO_LINGER");
        close(s);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long threads;
    long n = bench_count_threads(argc, argv, &threads);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
    socklen_t len = sizeof sin;

    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0)
        DIE("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&sin, sizeof sin) < 0)
        DIE("bind 127.0.0.1");
    if (listen(listener, 4096) < 0)
        DIE("listen");
    if (getsockname(listener, (struct sockaddr *)&sin, &len) < 0)
        DIE("getsockname");
    target = sin;

    pthread_t t;
    if (pthread_create(&t, NULL, acceptor, NULL) != 0)
        DIE("pthread_create");

    if (threads == 1) {
        client((void *)n); /* the original single-threaded loop, on the main thread */
        return 0;
    }
    pthread_t clients[64];
    for (long i = 0; i < threads; i++)
        if (pthread_create(&clients[i], NULL, client, (void *)bench_share(n, threads, i)) != 0)
            DIE("pthread_create");
    for (long i = 0; i < threads; i++)
        pthread_join(clients[i], NULL);
    return 0; /* exit ends the acceptor thread */
}
