/* forkstorm: fork() while other threads are inside connect() and getaddrinfo().
 *
 *   forkstorm THREADS FORKS [NAME]
 *
 * Listens on 127.0.0.1 (an ephemeral port; an acceptor thread accepts and closes), starts
 * THREADS threads that connect to it in a loop (closing with SO_LINGER 0: no TIME_WAIT); every
 * fourth thread also calls getaddrinfo(NAME) in its loop when NAME is given. Meanwhile the main
 * thread forks FORKS children one after the other; each child connects once to the listener
 * and _exit()s (status 0 if its connect succeeded, 1 if not). Then the threads stop.
 * Prints one JSON line:
 *   {"pid":P,"port":PORT,"thread_connects":N,"thread_failed":F,"lookups":L,"lookups_failed":LF,
 *    "children":C,"children_ok":K,"child_pids":[...]}
 * Every number counts calls made, whatever their outcome.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in target;
static atomic_int stop;
static atomic_long thread_connects, thread_failed, lookups, lookups_failed;
static const char *name;

static int connect_once(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (struct sockaddr *)&target, sizeof target);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return rc;
}

static void *acceptor(void *arg) {
    int lfd = *(int *)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c >= 0)
            close(c);
    }
    return NULL;
}

static void *worker(void *arg) {
    long id = (long)arg;
    while (!atomic_load(&stop)) {
        thread_connects++;
        if (connect_once() != 0)
            thread_failed++;
        if (name && id % 4 == 0) {
            struct addrinfo hints, *res = NULL;
            memset(&hints, 0, sizeof hints);
            hints.ai_socktype = SOCK_STREAM;
            lookups++;
            if (getaddrinfo(name, "80", &hints, &res) == 0)
                freeaddrinfo(res);
            else
                lookups_failed++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: forkstorm THREADS FORKS [NAME]\n");
        return 2;
    }
    int nthreads = atoi(argv[1]), nforks = atoi(argv[2]);
    name = argc > 3 ? argv[3] : NULL;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof target;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&target, sizeof target) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&target, &len) != 0) {
        perror("listener");
        return 2;
    }
    pthread_t acc, *threads = calloc(nthreads, sizeof *threads);
    pthread_create(&acc, NULL, acceptor, &lfd);
    for (long i = 0; i < nthreads; i++)
        pthread_create(&threads[i], NULL, worker, (void *)i);
    int *pids = calloc(nforks, sizeof *pids);
    int children = 0, children_ok = 0;
    for (int i = 0; i < nforks; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            break;
        }
        if (pid == 0)
            _exit(connect_once() == 0 ? 0 : 1);
        pids[children++] = pid;
        int status;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            children_ok++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    printf("{\"pid\":%d,\"port\":%d,\"thread_connects\":%ld,\"thread_failed\":%ld,\"lookups\":%ld,"
           "\"lookups_failed\":%ld,\"children\":%d,\"children_ok\":%d,\"child_pids\":[",
           (int)getpid(), ntohs(target.sin_port), (long)thread_connects, (long)thread_failed,
           (long)lookups, (long)lookups_failed, children, children_ok);
    for (int i = 0; i < children; i++)
        printf(i ? ",%d" : "%d", pids[i]);
    printf("]}\n");
    fflush(stdout);
    _exit(0); /* the acceptor thread is still blocked in accept() */
}
