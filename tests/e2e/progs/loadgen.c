/* loadgen: many processes x many threads x many attempts, each counted by the program itself.
 *
 *   loadgen parent LISTEN_FD PROCS THREADS ITERS TCP_PORT UDP_ALLOW_PORT UDP_DENY_PORT
 *       LISTEN_FD: an inherited listening TCP socket on 127.0.0.1:TCP_PORT. Forks an acceptor
 *       (accepts and closes, two threads), then fork+execs PROCS workers (this program, "worker"),
 *       waits for them, stops the acceptor. Exit 0 when every worker exited 0.
 *   loadgen worker THREADS ITERS TCP_PORT UDP_ALLOW_PORT UDP_DENY_PORT
 *       THREADS threads; each makes ITERS attempts, in turn: a TCP connect to 127.0.0.1:TCP_PORT
 *       (closed with SO_LINGER 0: no TIME_WAIT), a UDP sendto to 127.0.0.1:UDP_ALLOW_PORT, a UDP
 *       sendto to 127.0.0.1:UDP_DENY_PORT. Prints one JSON line (one write) with its pid and,
 *       per kind, calls made and how they ended:
 *       {"pid":P,"tcp":N,"tcp_ok":N,"tcp_eacces":N,"ua":N,"ua_ok":N,"ua_eacces":N,
 *        "ud":N,"ud_ok":N,"ud_eacces":N}
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

enum { TCP, UA, UD, KINDS };
static atomic_long made[KINDS], ok[KINDS], eacces[KINDS];
static struct sockaddr_in dest[KINDS];
static int iters;

static void set_dest(int kind, int port) {
    memset(&dest[kind], 0, sizeof dest[kind]);
    dest[kind].sin_family = AF_INET;
    dest[kind].sin_port = htons((unsigned short)port);
    dest[kind].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void count(int kind, int rc, int err) {
    made[kind]++;
    if (rc >= 0)
        ok[kind]++;
    else if (err == EACCES)
        eacces[kind]++;
}

static void *worker_thread(void *arg) {
    (void)arg;
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    if (udp < 0) {
        perror("socket");
        exit(2);
    }
    for (int i = 0; i < iters; i++) {
        int kind = i % KINDS;
        if (kind == TCP) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0) {
                perror("socket");
                exit(2);
            }
            int rc = connect(fd, (struct sockaddr *)&dest[TCP], sizeof dest[TCP]);
            count(TCP, rc, errno);
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(fd);
        } else {
            ssize_t n = sendto(udp, "load", 4, 0, (struct sockaddr *)&dest[kind], sizeof dest[kind]);
            count(kind, n < 0 ? -1 : 0, errno);
        }
    }
    close(udp);
    return NULL;
}

static int worker(int nthreads) {
    pthread_t *t = calloc(nthreads, sizeof *t);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&t[i], NULL, worker_thread, NULL) != 0) {
            perror("pthread_create");
            return 2;
        }
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    char line[512];
    int n = snprintf(line, sizeof line,
                     "{\"pid\":%d,\"tcp\":%ld,\"tcp_ok\":%ld,\"tcp_eacces\":%ld,\"ua\":%ld,\"ua_ok\":%ld,"
                     "\"ua_eacces\":%ld,\"ud\":%ld,\"ud_ok\":%ld,\"ud_eacces\":%ld}\n",
                     (int)getpid(), (long)made[TCP], (long)ok[TCP], (long)eacces[TCP], (long)made[UA],
                     (long)ok[UA], (long)eacces[UA], (long)made[UD], (long)ok[UD], (long)eacces[UD]);
    return write(1, line, n) == n ? 0 : 2;
}

static void *accept_loop(void *arg) {
    int lfd = *(int *)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c >= 0)
            close(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "worker") == 0) {
        iters = atoi(argv[3]);
        set_dest(TCP, atoi(argv[4]));
        set_dest(UA, atoi(argv[5]));
        set_dest(UD, atoi(argv[6]));
        return worker(atoi(argv[2]));
    }
    if (argc == 9 && strcmp(argv[1], "parent") == 0) {
        int lfd = atoi(argv[2]), procs = atoi(argv[3]);
        pid_t acceptor = fork();
        if (acceptor == 0) {
            pthread_t a, b;
            pthread_create(&a, NULL, accept_loop, &lfd);
            pthread_create(&b, NULL, accept_loop, &lfd);
            pthread_join(a, NULL);
            _exit(0);
        }
        close(lfd);
        pid_t *pids = calloc(procs, sizeof *pids);
        for (int i = 0; i < procs; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                execl(argv[0], argv[0], "worker", argv[4], argv[5], argv[6], argv[7], argv[8], (char *)NULL);
                _exit(127);
            }
        }
        int failed = 0;
        for (int i = 0; i < procs; i++) {
            int status;
            if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                failed++;
        }
        kill(acceptor, SIGKILL);
        waitpid(acceptor, NULL, 0);
        return failed ? 1 : 0;
    }
    fprintf(stderr, "usage: loadgen parent LISTEN_FD PROCS THREADS ITERS TCP_PORT UDP_ALLOW UDP_DENY\n"
                    "       loadgen worker THREADS ITERS TCP_PORT UDP_ALLOW UDP_DENY\n");
    return 2;
}
