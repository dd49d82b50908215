/* sigconnect: connect() from a signal handler.
 *
 *   sigconnect once PORT
 *       raise(SIGALRM); the handler connects to 127.0.0.1:PORT.
 *       Prints {"handler_calls":1,"handler_ok":N,"handler_eacces":N,"handler_other":N}.
 *   sigconnect storm LOOP_PORT HANDLER_PORT ITERS
 *       The main thread connects to 127.0.0.1:LOOP_PORT ITERS times while a second thread sends
 *       it SIGUSR1 every 200 microseconds; the handler connects to 127.0.0.1:HANDLER_PORT. So
 *       the signal often arrives while the main thread is inside the guard's connect hook.
 *       Prints {"loop_ok":N,"loop_eacces":N,"loop_other":N,"handler_calls":N,...}.
 * The handler keeps errno; "ok" counts connects that succeeded.
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
#include <unistd.h>

static int handler_port;
static atomic_long h_calls, h_ok, h_eacces, h_other;
static atomic_int done;
static pthread_t main_thread;

static int try_connect(int port) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int err = rc == 0 ? 0 : errno;
    close(fd);
    return err;
}

static void handler(int sig) {
    (void)sig;
    int saved = errno;
    int err = try_connect(handler_port);
    h_calls++;
    if (err == 0)
        h_ok++;
    else if (err == EACCES)
        h_eacces++;
    else
        h_other++;
    errno = saved;
}

static void *signaller(void *arg) {
    (void)arg;
    while (!atomic_load(&done)) {
        pthread_kill(main_thread, SIGUSR1);
        usleep(200);
    }
    return NULL;
}

static void print_handler(void) {
    printf("\"handler_calls\":%ld,\"handler_ok\":%ld,\"handler_eacces\":%ld,\"handler_other\":%ld}\n",
           (long)h_calls, (long)h_ok, (long)h_eacces, (long)h_other);
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    if (argc == 3 && strcmp(argv[1], "once") == 0) {
        handler_port = atoi(argv[2]);
        sigaction(SIGALRM, &sa, NULL);
        raise(SIGALRM);
        printf("{");
        print_handler();
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "storm") == 0) {
        int loop_port = atoi(argv[2]), iters = atoi(argv[4]);
        handler_port = atoi(argv[3]);
        sigaction(SIGUSR1, &sa, NULL);
        main_thread = pthread_self();
        pthread_t t;
        pthread_create(&t, NULL, signaller, NULL);
        long ok = 0, eacces = 0, other = 0;
        for (int i = 0; i < iters; i++) {
            int err = try_connect(loop_port);
            if (err == 0)
                ok++;
            else if (err == EACCES)
                eacces++;
            else
                other++;
        }
        atomic_store(&done, 1);
        pthread_join(t, NULL);
        printf("{\"loop_ok\":%ld,\"loop_eacces\":%ld,\"loop_other\":%ld,", ok, eacces, other);
        print_handler();
        return 0;
    }
    fprintf(stderr, "usage: sigconnect once PORT | storm LOOP_PORT HANDLER_PORT ITERS\n");
    return 2;
}
