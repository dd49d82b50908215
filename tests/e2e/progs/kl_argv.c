/* A static program for the spawn trampoline's tests: `kl_argv DENIED_IP PORT ALLOWED_IP PORT`
 * prints its argv[0], whether it leads its own process group, has SIGUSR1 blocked and SIGPIPE
 * ignored (what a spawn's attributes set), then connects to each address and prints "connect RESULT ERRNO". */
#include <arpa/inet.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void try_connect(const char *ip, const char *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(port));
    inet_pton(AF_INET, ip, &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    printf("connect %s %d %d\n", ip, r, r < 0 ? errno : 0);
    close(s);
}

int main(int argc, char **argv) {
    printf("argv0 %s\n", argv[0]);
    sigset_t mask;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    struct sigaction pipe_act;
    sigaction(SIGPIPE, NULL, &pipe_act);
    printf("pgrp-own %d usr1-blocked %d sigpipe-ign %d\n", getpgrp() == getpid(),
           sigismember(&mask, SIGUSR1), pipe_act.sa_handler == SIG_IGN);
    if (argc == 5) {
        try_connect(argv[1], argv[2]);
        try_connect(argv[3], argv[4]);
    }
    return 7;
}
